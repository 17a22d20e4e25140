pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // onnxruntime-genai's Android AAR is not on Maven Central or Google Maven: Microsoft attaches it to
        // each GitHub release as onnxruntime-genai-android-<version>.aar. This Ivy layout lets Gradle fetch
        // exactly that file (the version is pinned in gradle/libs.versions.toml) and nothing else from there.
        exclusiveContent {
            forRepository {
                ivy {
                    name = "onnxruntimeGenaiGithubReleases"
                    url = uri("https://github.com/microsoft/onnxruntime-genai/releases/download/")
                    patternLayout {
                        artifact("v[revision]/[artifact]-[revision].[ext]")
                    }
                    metadataSources {
                        artifact()
                    }
                }
            }
            filter {
                includeModule("com.microsoft.onnxruntime", "onnxruntime-genai-android")
            }
        }
    }
}

rootProject.name = "edgetune-android-demo"
include(":app")
