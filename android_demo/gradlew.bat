@rem Gradle wrapper launcher for the edgetune Android demo (Windows).
@rem It runs gradle\wrapper\gradle-wrapper.jar, which downloads the Gradle version pinned in
@rem gradle\wrapper\gradle-wrapper.properties and runs the build with it. Needs a JDK 17 or newer.
@if "%DEBUG%"=="" @echo off
setlocal

set "APP_HOME=%~dp0"
set "CLASSPATH=%APP_HOME%gradle\wrapper\gradle-wrapper.jar"

set "JAVA_EXE=java.exe"
if defined JAVA_HOME set "JAVA_EXE=%JAVA_HOME%\bin\java.exe"

"%JAVA_EXE%" -version >NUL 2>&1
if errorlevel 1 goto noJava

"%JAVA_EXE%" -Xmx64m -Xms64m %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=%~n0" -classpath "%CLASSPATH%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%

:noJava
echo ERROR: no usable java: set JAVA_HOME to a JDK 17 or newer, or put java on the PATH. 1>&2
exit /b 1
