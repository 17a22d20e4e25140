#!/usr/bin/env bash
# Compile check of the Android demo app, without an Android SDK or Gradle (README.md, "Compile check").
#
# 1. Fetches pinned tools and libraries once into ${EDGETUNE_CACHE:-$HOME/.cache/edgetune}/android-compile/:
#    from Debian, aapt2, framework-res.apk (API 29), android-23.jar (the API 23 platform), JUnit 4 and
#    Hamcrest; from npm, the Kotlin compiler of the app's Kotlin version and the ONNX Runtime,
#    onnxruntime-extensions and onnxruntime-genai Android AARs as a third party repackages them.
# 2. Links app/src/main/res and the manifest with aapt2 (so R exists), compiles the stand-ins for AndroidX
#    and kotlinx-serialization-json (compile_check/standins/), then every Kotlin file of app/src/main,
#    app/src/test and app/src/androidTest, with -Werror, against the API 23 jar instead of a JDK.
# 3. Runs the JVM unit tests (app/src/test) and prints "N passed, N failed".
# Any download, link, compile or test failure exits non-zero. Outputs go to build/compile-check/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APP=$HERE/app
CHECK=$HERE/compile_check
CACHE=${EDGETUNE_CACHE:-${HOME:?set HOME or EDGETUNE_CACHE}/.cache/edgetune}/android-compile
BUILD=$HERE/build/compile-check

# ---- Pins ------------------------------------------------------------------------------------------------
# Must equal `kotlin` in gradle/libs.versions.toml (checked below).
KOTLIN_VERSION=2.3.0

# npm packages: name, version, SHA-256 of the tarball `npm pack` fetches.
# The com.github.asus4.* packages (a Unity plugin) carry Microsoft's Android AARs: ONNX Runtime 1.29.0,
# onnxruntime-extensions 0.14.0 and onnxruntime-genai 0.15.2 (their README; 1.29.0 and 0.15.2 are also
# the version strings inside the native libraries). Only each AAR's classes.jar is used.
NPM_PACKAGES=(
    "kotlin-compiler $KOTLIN_VERSION df0e398053ae178f70006529d1ae9b9adbccf606a23e5dc3993e87c98a412695"
    "com.github.asus4.onnxruntime 0.4.9 e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
    "com.github.asus4.onnxruntime-extensions 0.4.9 013055b4988fd3b96422c5e916bfc318b1c9eebd8f94600d4018860da1a08b1b"
    "com.github.asus4.onnxruntime-genai 0.4.9 80d03d6afe24dbf6bcde5bfcf424b26c9a2a4161a495e2dc71ac2e08288e7af4"
)

# Debian packages (amd64): name, version, SHA-256 of the .deb. libandroid-23-java comes from sid or
# bullseye (bookworm does not have it), the others from bookworm. The two marked "-" are shared libraries
# aapt2 links to that Debian patches for security (p7zip-full only provides 7z.so, which libbacktrace links
# to): they are taken at bookworm's current version, which apt checks against the suite's signed index.
DEBIAN_PACKAGES=(
    "libandroid-23-java 6.0.1+r72-6 8af1b6df556971dda0a6da3536ea526a838e0c363afcdd454213d8bce94793e3"
    "android-framework-res 1:10.0.0+r36-10 267dad38b2e01b2705bd106023cfb5e6410175ebe35c60f3186eef521248bc6b"
    "aapt 1:10.0.0+r36-10 a4790dd07923a45ba17982d257abbce3f8050e8b30b0952545255502a5d1f505"
    "android-libaapt 1:10.0.0+r36-10 e18333b3d0259c3ceffeed142a5bbce2114eb7021c0ca5ef1ac505c0629c5171"
    "android-libandroidfw 1:10.0.0+r36-10 26add03f0edf12da9d710b9be2bf0ec867f583d490135d99b9789bbbfe1bab4e"
    "android-libbacktrace 1:29.0.6-28 78733043d8e8f5906eb969a18c3178c1898f50d3684de23398a3eeb7ba7ea122"
    "android-libbase 1:29.0.6-28 c651582c9beb229b6a4581eef5d03796293aa2da3b602eafc5427b198060819f"
    "android-libcutils 1:29.0.6-28 12ac0a99beb683269d77af09bf80ddd7b8c428fda442c05070ea3ff50429718c"
    "android-liblog 1:29.0.6-28 d495761ec2dc87070f6ac75c771d221d05e2be387cbaeab7e7c7fcd740ce4ce2"
    "android-libutils 1:29.0.6-28 c9554365cd0d20ac22138195963b2b790e45fc3edade3626a05311a9cae5cf36"
    "android-libziparchive 1:29.0.6-28 e6d674143b948017a96740f449547799127feba75109875446c89e0e05a3e29d"
    "junit4 4.13.2-3 2f516bef5fa0f714da4f8b95c367c00aea64159c099c5157579fb95823dbcc56"
    "libhamcrest-java 2.2-1 a3e84b0462e4bd75bfcd34dd46c9a5db6b9e7174da2d120339f4dc89aab90a56"
    "libprotobuf-lite32 - -"
    "p7zip-full - -"
)
DEBIAN_SUITES=(bookworm sid bullseye)
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# ---- Helpers ---------------------------------------------------------------------------------------------
say() { printf '%s\n' "$*"; }
die() { printf 'compile_check: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"; }
check_sha() {
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [[ $got == "$2" ]] || die "$(basename "$1"): SHA-256 $got, but the pin in compile_check.sh is $2"
}

need java "a JDK 17 or newer (apt-get install openjdk-17-jdk-headless)"
need javac "a JDK 17 or newer (apt-get install openjdk-17-jdk-headless)"
need npm "apt-get install npm"
need unzip "apt-get install unzip"
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
[[ ${java_major%%.*} -ge 17 ]] || die "Java $java_major found; the app targets Java 17, so a JDK 17 or newer is needed"
catalog_kotlin=$(sed -n 's/^kotlin *= *"\(.*\)"/\1/p' "$HERE/gradle/libs.versions.toml")
[[ $catalog_kotlin == "$KOTLIN_VERSION" ]] ||
    die "gradle/libs.versions.toml has Kotlin $catalog_kotlin but compile_check.sh pins kotlin-compiler $KOTLIN_VERSION: update the pin"

START=$SECONDS
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one fetch at a time per cache
rm -rf "$CACHE"/tmp.*  # left by an interrupted run
TMP=$(mktemp -d "$CACHE/tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---- Fetch (skipped for whatever the cache already holds) ------------------------------------------------
DEB_ROOT=$CACHE/debian
NPM_ROOT=$CACHE/npm

deb_stamp() { printf '%s/.stamps/%s' "$DEB_ROOT" "$1"; }

fetch_debian() {
    local entry name version sha missing=()
    for entry in "${DEBIAN_PACKAGES[@]}"; do
        read -r name version sha <<<"$entry"
        [[ -f $(deb_stamp "$name") && $(head -n1 "$(deb_stamp "$name")") == "$version $sha" ]] || missing+=("$entry")
    done
    ((${#missing[@]})) || return 0
    need apt-get "a Debian-based system"
    need dpkg-deb "a Debian-based system"
    [[ $(dpkg --print-architecture) == amd64 ]] || die "the Debian pins are for amd64, not $(dpkg --print-architecture)"
    # The Debian mirror this machine's apt already uses, with suites of our choosing, in a private apt
    # state: nothing is installed and the system's apt configuration is left as it is.
    local codename mirror apt=$TMP/apt
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # shellcheck disable=SC2016  # $(REPO_URI) is apt's format syntax, not the shell's
    mirror=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
        awk -v c="$codename" '$2 == c { print $1; exit }')
    [[ -n $mirror ]] || die "cannot tell which Debian mirror apt uses (no '$codename' suite in its sources)"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/prefs" "$apt/debs"
    local suite
    for suite in "${DEBIAN_SUITES[@]}"; do
        printf 'deb [signed-by=%s] %s %s main\n' "$DEBIAN_KEYRING" "$mirror" "$suite"
    done >"$apt/sources.list"
    local opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
        -o "Dir::Etc::Preferences=$apt/prefs/none" -o "Dir::Etc::PreferencesParts=$apt/prefs"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::Cache::pkgcache=
        -o Dir::Cache::srcpkgcache= -o Acquire::Languages=none -o Debug::NoLocking=1)
    [[ $(id -u) != 0 ]] || opts+=(-o APT::Sandbox::User=root)
    say "fetch: ${#missing[@]} Debian packages (indexes of ${DEBIAN_SUITES[*]})"
    # A suite that cannot be read (say, bullseye once it leaves the mirror) is not fatal by itself: the
    # download below fails if the package is in none of the others.
    apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || say "  (apt-get update reported problems, see below if a download fails)"
    local specs=() file
    for entry in "${missing[@]}"; do
        read -r name version sha <<<"$entry"
        if [[ $version == - ]]; then specs+=("$name/bookworm"); else specs+=("$name=$version"); fi
    done
    (cd "$apt/debs" && apt-get "${opts[@]}" download "${specs[@]}") >"$apt/download.log" 2>&1 ||
        { cat "$apt/update.log" "$apt/download.log" >&2; die "cannot download the Debian packages ${specs[*]}"; }
    for entry in "${missing[@]}"; do
        read -r name version sha <<<"$entry"
        file=$(ls "$apt/debs/${name}_"*.deb)
        if [[ $sha != - ]]; then
            check_sha "$file" "$sha"
        else
            say "  $name $(dpkg-deb -f "$file" Version) (bookworm's current version)"
        fi
        dpkg-deb -x "$file" "$DEB_ROOT"
        mkdir -p "$DEB_ROOT/.stamps"
        printf '%s %s\n' "$version" "$sha" >"$(deb_stamp "$name")"
        rm -f "$file"
    done
}

fetch_npm() {
    local entry name version sha dest file
    for entry in "${NPM_PACKAGES[@]}"; do
        read -r name version sha <<<"$entry"
        dest=$NPM_ROOT/$name-$version
        [[ -f $dest/.sha256 && $(<"$dest/.sha256") == "$sha" ]] && continue
        say "fetch: npm $name@$version"
        mkdir -p "$TMP/npm" "$TMP/x"
        file=$(cd "$TMP/npm" && npm pack --loglevel=error --cache "$TMP/npm-cache" "$name@$version" | tail -n1) ||
            die "npm pack $name@$version failed"
        file=$TMP/npm/$file
        [[ -f $file ]] || die "npm pack $name@$version wrote no tarball"
        check_sha "$file" "$sha"
        rm -rf "$dest" "$TMP/x"
        mkdir -p "$dest" "$TMP/x"
        if [[ $name == kotlin-compiler ]]; then
            tar -xzf "$file" -C "$dest" --strip-components=1 --exclude='*-sources.jar' --exclude='*.klib' \
                package/bin package/lib package/build.txt package/license
        else
            # The AAR's classes.jar is what Gradle would put on the compile classpath.
            tar -xzf "$file" -C "$TMP/x" --wildcards 'package/Plugins/Android/*.aar' package/README.md
            unzip -q -o "$TMP/x"/package/Plugins/Android/*.aar classes.jar AndroidManifest.xml -d "$dest"
            cp "$TMP/x/package/README.md" "$dest/"
        fi
        printf '%s\n' "$sha" >"$dest/.sha256"
        rm -f "$file"
    done
}

fetch_debian
fetch_npm
rm -rf "$TMP"
exec 9>&-
say "fetch: done ($((SECONDS - START)) s; cache $CACHE)"

ANDROID_JAR=$DEB_ROOT/usr/share/java/com.android.android-23.jar
FRAMEWORK_RES=$DEB_ROOT/usr/share/android-framework-res/framework-res.apk
AAPT2=$DEB_ROOT/usr/lib/android-sdk/build-tools/debian/aapt2
AAPT2_LIBS=$DEB_ROOT/usr/lib/x86_64-linux-gnu/android:$DEB_ROOT/usr/lib/x86_64-linux-gnu:$DEB_ROOT/usr/lib/p7zip
JUNIT=$DEB_ROOT/usr/share/java/junit4.jar:$DEB_ROOT/usr/share/java/hamcrest-2.2.jar
KOTLIN_HOME=$NPM_ROOT/kotlin-compiler-$KOTLIN_VERSION
COROUTINES=$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar
ORT=$NPM_ROOT/com.github.asus4.onnxruntime-0.4.9/classes.jar
ORT_EXT=$NPM_ROOT/com.github.asus4.onnxruntime-extensions-0.4.9/classes.jar
ORT_GENAI=$NPM_ROOT/com.github.asus4.onnxruntime-genai-0.4.9/classes.jar
for f in "$ANDROID_JAR" "$FRAMEWORK_RES" "$AAPT2" "$KOTLIN_HOME/lib/kotlin-compiler.jar" "$ORT" "$ORT_EXT" "$ORT_GENAI"; do
    [[ -f $f ]] || die "$f is missing from the cache: delete $CACHE and run again"
done

# ---- Resources: aapt2 compile + link, as AGP does, which also checks every resource reference -------------
rm -rf "$BUILD"
mkdir -p "$BUILD"/{gen,classes/{r,standins,main,test,androidTest,runner}}
gradle_value() { sed -n "s/^ *$1 *= *\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$APP/build.gradle.kts" | head -n1; }
namespace=$(gradle_value namespace)
[[ -n $namespace ]] || die "app/build.gradle.kts sets no namespace"
# AGP's manifest merger puts the namespace in the manifest's package attribute; do the same.
sed "0,/<manifest /s//<manifest package=\"$namespace\" /" "$APP/src/main/AndroidManifest.xml" >"$BUILD/AndroidManifest.xml"
LD_LIBRARY_PATH=$AAPT2_LIBS "$AAPT2" compile --dir "$APP/src/main/res" -o "$BUILD/res.zip" ||
    die "aapt2 compile failed on app/src/main/res"
LD_LIBRARY_PATH=$AAPT2_LIBS "$AAPT2" link -I "$FRAMEWORK_RES" --manifest "$BUILD/AndroidManifest.xml" \
    --min-sdk-version "$(gradle_value minSdk)" --target-sdk-version "$(gradle_value targetSdk)" \
    --version-code "$(gradle_value versionCode)" --version-name "$(gradle_value versionName)" \
    --java "$BUILD/gen" -o "$BUILD/resources.ap_" "$BUILD/res.zip" ||
    die "aapt2 link failed: a resource or manifest reference does not resolve (messages above)"
r_java=$BUILD/gen/${namespace//.//}/R.java
[[ -f $r_java ]] || die "aapt2 wrote no $r_java"
say "aapt2: linked app/src/main/res and AndroidManifest.xml against framework-res.apk (API 29): $(grep -c 'public static final int' "$r_java") R fields"

# ---- Java: R, the Java stand-ins (androidx.core, androidx.test) and the two small runners -----------------
JAVAC_ANDROID=(javac -source 8 -target 8 -bootclasspath "$ANDROID_JAR" -Xlint:-options -Werror -encoding UTF-8)
"${JAVAC_ANDROID[@]}" -d "$BUILD/classes/r" "$r_java"
mapfile -t standin_java < <(find "$CHECK/standins" -name '*.java' | sort)
mapfile -t standin_kt < <(find "$CHECK/standins" -name '*.kt' | sort)
"${JAVAC_ANDROID[@]}" -cp "$JUNIT" -d "$BUILD/classes/standins" "${standin_java[@]}"
javac -Werror -encoding UTF-8 -cp "$KOTLIN_HOME/lib/kotlin-compiler.jar:$JUNIT" -d "$BUILD/classes/runner" \
    "$CHECK/runner/KotlincSteps.java" "$CHECK/runner/JUnitSummary.java"

# ---- Kotlin: stand-ins, main, test, androidTest, in one compiler process ----------------------------------
mapfile -t main_kt < <(find "$APP/src/main" -name '*.kt' | sort)
mapfile -t test_kt < <(find "$APP/src/test" -name '*.kt' | sort)
mapfile -t android_test_kt < <(find "$APP/src/androidTest" -name '*.kt' | sort)
((${#main_kt[@]} && ${#test_kt[@]} && ${#android_test_kt[@]})) || die "app/src/main, test or androidTest has no Kotlin file"
say "kotlinc $KOTLIN_VERSION: ${#main_kt[@]} main, ${#test_kt[@]} test, ${#android_test_kt[@]} androidTest files against" \
    "android-23.jar, ONNX Runtime 1.29.0 / extensions 0.14.0 / GenAI 0.15.2 classes, stand-ins for AndroidX and kotlinx-serialization-json"
C=$BUILD/classes
# -no-jdk: the platform jar stands in for the JDK, as on Android, so java.* APIs newer than API 23 do not resolve.
KOTLINC_COMMON=(-no-jdk -Werror -jvm-target 17 -kotlin-home "$KOTLIN_HOME")
APP_CP=$ANDROID_JAR:$COROUTINES:$ORT:$ORT_EXT:$ORT_GENAI:$C/standins:$C/r
java -Xmx1g -XX:TieredStopAtLevel=1 -cp "$C/runner:$KOTLIN_HOME/lib/kotlin-compiler.jar" KotlincSteps \
    stand-ins "${KOTLINC_COMMON[@]}" -cp "$ANDROID_JAR:$COROUTINES:$C/standins" -d "$C/standins" "${standin_kt[@]}" --- \
    main "${KOTLINC_COMMON[@]}" -module-name app_debug -cp "$APP_CP" -d "$C/main" "${main_kt[@]}" --- \
    test "${KOTLINC_COMMON[@]}" -module-name app_debugUnitTest -cp "$APP_CP:$C/main:$JUNIT" \
    -Xfriend-paths="$C/main" -d "$C/test" "${test_kt[@]}" --- \
    androidTest "${KOTLINC_COMMON[@]}" -module-name app_debugAndroidTest -cp "$APP_CP:$C/main:$JUNIT" \
    -Xfriend-paths="$C/main" -d "$C/androidTest" "${android_test_kt[@]}"

# ---- JVM unit tests: on the JDK, with no Android classes on the class path (core/ must not need them) -----
say "junit: app/src/test on the JVM (Java $java_major)"
status=0
java -cp "$C/runner:$C/test:$C/main:$C/standins:$KOTLIN_HOME/lib/kotlin-stdlib.jar:$JUNIT" JUnitSummary "$C/test" || status=$?
say "compile check: $((SECONDS - START)) s"
exit "$status"
