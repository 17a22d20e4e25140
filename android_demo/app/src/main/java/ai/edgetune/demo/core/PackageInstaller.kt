package ai.edgetune.demo.core

import java.io.File
import java.io.InputStream

/** Read access to the files `edgetune package` put in the APK's assets (paths use '/'). */
fun interface AssetSource {
    /** Opens the asset at [path], or returns null when the APK has no such asset. */
    fun openOrNull(path: String): InputStream?
}

/** A package problem the user fixes on the host (missing, stale or corrupt package); the message says how. */
open class PackageException(message: String, cause: Throwable? = null) : Exception(message, cause)

/** The APK holds no package for this screen. */
class NoPackageException(message: String) : PackageException(message)

/** A package copied to app storage, ready to open by path. */
data class InstalledPackage(val dir: File, val manifest: PackageManifest) {
    /** The model ONNX Runtime or onnxruntime-genai opens. */
    val modelFile: File get() = File(dir, manifest.model.file)

    fun file(name: String): File = File(dir, name)
}

/**
 * Copies a package out of the APK's assets into app storage, so that ONNX Runtime opens the model by path
 * (which is what lets models keep their weights in external files such as model.onnx.data), then checks
 * the copied model's SHA-256 against the manifest.
 *
 * Copying happens when the installed manifest differs from the APK's or a listed file is missing. The
 * installed manifest is written last, so an interrupted copy is redone on the next start.
 */
class PackageInstaller(private val assets: AssetSource, private val filesDir: File) {

    fun installClassifier(onProgress: (copiedBytes: Long, totalBytes: Long) -> Unit = { _, _ -> }): InstalledPackage =
        install(CLASSIFIER_ASSETS, File(filesDir, CLASSIFIER_ASSETS), PackageManifest.TASK_CLASSIFICATION, NO_CLASSIFIER, onProgress)

    fun installChat(onProgress: (copiedBytes: Long, totalBytes: Long) -> Unit = { _, _ -> }): InstalledPackage =
        install(CHAT_ASSETS, File(filesDir, CHAT_ASSETS), PackageManifest.TASK_CAUSAL_LM, NO_CHAT, onProgress)

    /** The classifier folder in app storage, where the benchmark resolves relative model names. */
    val classifierDir: File get() = File(filesDir, CLASSIFIER_ASSETS)

    internal fun install(
        assetDir: String,
        dest: File,
        task: String,
        missingMessage: String,
        onProgress: (Long, Long) -> Unit,
    ): InstalledPackage {
        val manifestAsset = "$assetDir/${PackageManifest.FILE_NAME}"
        val manifestBytes = assets.openOrNull(manifestAsset)?.use { it.readBytes() }
            ?: throw NoPackageException(missingMessage)
        val manifest = try {
            PackageManifest.parse(manifestBytes.toString(Charsets.UTF_8), "assets/$manifestAsset")
        } catch (e: JsonFormatException) {
            throw PackageException("${e.message}; re-run edgetune package", e)
        }
        if (manifest.task != task) {
            throw PackageException("assets/$manifestAsset is a ${manifest.task} package; this screen needs $task")
        }
        val installedManifest = File(dest, PackageManifest.FILE_NAME)
        val files = manifest.packageFiles().filter { it != PackageManifest.FILE_NAME }
        val upToDate = installedManifest.isFile && installedManifest.readBytes().contentEquals(manifestBytes) &&
            files.all { File(dest, it).isFile }
        if (!upToDate) {
            if (installedManifest.exists() && !installedManifest.delete()) {
                throw PackageException("cannot replace $installedManifest")
            }
            var copied = 0L
            val total = maxOf(manifest.model.sizeBytes, 1L)
            for (name in files) {
                val asset = "$assetDir/$name"
                val stream = assets.openOrNull(asset)
                    ?: throw PackageException("assets/$asset is missing but manifest.json lists it: re-run edgetune package")
                stream.use { input ->
                    AtomicFiles.copy(input, File(dest, name)) { n ->
                        copied += n
                        onProgress(copied, total)
                    }
                }
            }
            AtomicFiles.copy(manifestBytes.inputStream(), installedManifest)
        }
        val installed = InstalledPackage(dest, manifest)
        try {
            verify(installed.modelFile, manifest.model.sha256)
        } catch (e: PackageException) {
            installedManifest.delete()
            throw e
        }
        return installed
    }

    companion object {
        /** Classifier package: assets/edgetune/ in the APK, filesDir/edgetune/ once copied. */
        const val CLASSIFIER_ASSETS = "edgetune"

        /** LLM package: assets/edgetune/llm/ in the APK, filesDir/edgetune/llm/ once copied. */
        const val CHAT_ASSETS = "edgetune/llm"

        const val NO_CLASSIFIER = "No model packaged: run edgetune build recipes/intent-minilm.yaml"
        const val NO_CHAT = "No chat model packaged: run edgetune build recipes/home-assistant-smollm2.yaml, " +
            "then edgetune package runs/home-assistant-smollm2 --android android_demo"

        /** Throws the "stale or corrupt package" error when [file]'s SHA-256 is not [expectedSha256]. */
        fun verify(file: File, expectedSha256: String) {
            if (!file.isFile) throw PackageException("stale or corrupt package: ${file.name} is missing")
            val actual = Sha256.hex(file)
            if (!actual.equals(expectedSha256, ignoreCase = true)) {
                throw PackageException(
                    "stale or corrupt package: ${file.name} has SHA-256 ${actual.take(12)}… but manifest.json " +
                        "says ${expectedSha256.take(12)}…; re-run edgetune package and reinstall the app",
                )
            }
        }
    }
}
