package ai.edgetune.demo.runtime

import ai.edgetune.demo.core.AtomicFiles
import ai.edgetune.demo.core.BenchmarkPlan
import ai.edgetune.demo.core.BenchmarkRequest
import ai.edgetune.demo.core.BenchmarkResult
import ai.edgetune.demo.core.ClassificationGolden
import ai.edgetune.demo.core.DeviceInfo
import ai.edgetune.demo.core.JsonFormatException
import ai.edgetune.demo.core.LatencyStats
import ai.edgetune.demo.core.PackageException
import ai.edgetune.demo.core.PackageInstaller
import ai.edgetune.demo.core.PackageManifest
import ai.edgetune.demo.core.PeakRss
import ai.edgetune.demo.core.Sha256
import java.io.File
import java.util.UUID

/**
 * The headless benchmark: load (timed), one first inference (timed), warmup runs, then timed runs of the
 * packaged classifier, summarized as `result.json`. [run] never throws: failures become an error result.
 */
class BenchmarkRunner(
    private val installer: PackageInstaller,
    private val device: DeviceInfo,
) {

    fun run(extras: Map<String, Any?>): BenchmarkResult {
        var request = BenchmarkRequest()
        var plan: BenchmarkPlan? = null
        var sha: String? = null
        var size: Long? = null
        var loadMs: Double? = null
        var firstMs: Double? = null
        var ortVersion: String? = null
        return try {
            request = BenchmarkRequest.fromExtras(extras)
            val folder = BenchmarkPlan.packageFolder(request, installer.classifierDir)
            if (folder == installer.classifierDir) installer.installClassifier()
            val manifest = readManifest(folder)
            val golden = manifest?.let { m ->
                File(folder, m.golden.file).takeIf { it.isFile }?.let { ClassificationGolden.parse(it.readText(), it.path) }
            }
            val p = BenchmarkPlan.resolve(request, folder, manifest, golden) { UUID.randomUUID().toString() }
            plan = p
            if (!p.modelFile.isFile) throw PackageException("model file not found: ${p.modelFile}")
            size = p.modelFile.length()
            sha = Sha256.hex(p.modelFile)
            if (p.expectedSha256 != null && sha != p.expectedSha256) {
                throw PackageException(
                    "stale or corrupt package: ${p.modelName} has SHA-256 ${sha.take(12)}… but manifest.json says " +
                        "${p.expectedSha256.take(12)}…",
                )
            }
            ortVersion = IntentClassifier.runtimeVersion()

            var t0 = System.nanoTime()
            val classifier = IntentClassifier.open(p.modelFile, manifest, p.settings)
            loadMs = msSince(t0)
            val samples = classifier.use { c ->
                t0 = System.nanoTime()
                c.logits(p.text)
                firstMs = msSince(t0)
                repeat(p.warmup) { c.logits(p.text) }
                List(p.runs) {
                    val start = System.nanoTime()
                    c.logits(p.text)
                    msSince(start)
                }
            }
            result(request, plan, BenchmarkResult.OK, null, sha, size, loadMs, firstMs, LatencyStats.of(samples), samples, ortVersion)
        } catch (t: Throwable) {
            if (t is VirtualMachineError && t !is OutOfMemoryError) throw t
            result(request, plan, BenchmarkResult.ERROR, BenchmarkResult.oneLine(t), sha, size, loadMs, firstMs, null, emptyList(), ortVersion)
        }
    }

    /** The error result for a run whose screen was closed before it finished. */
    fun interrupted(extras: Map<String, Any?>): BenchmarkResult {
        val request = try {
            BenchmarkRequest.fromExtras(extras)
        } catch (e: IllegalArgumentException) {
            BenchmarkRequest(runId = extras[BenchmarkRequest.RUN_ID]?.toString())
        }
        return result(
            request, null, BenchmarkResult.ERROR, "interrupted: the benchmark screen closed before the run finished",
            null, null, null, null, null, emptyList(), null,
        )
    }

    /** The classifier manifest in [folder], or null when the folder has none. */
    private fun readManifest(folder: File): PackageManifest? {
        val file = File(folder, PackageManifest.FILE_NAME)
        if (!file.isFile) return null
        val manifest = try {
            PackageManifest.parse(file.readText(), file.path)
        } catch (e: JsonFormatException) {
            throw PackageException(e.message ?: "invalid ${file.path}", e)
        }
        if (!manifest.isClassification) {
            throw PackageException("${file.path} is a ${manifest.task} package; the benchmark runs classifiers")
        }
        return manifest
    }

    private fun result(
        request: BenchmarkRequest,
        plan: BenchmarkPlan?,
        status: String,
        error: String?,
        sha: String?,
        size: Long?,
        loadMs: Double?,
        firstMs: Double?,
        latency: LatencyStats?,
        samples: List<Double>,
        ortVersion: String?,
    ) = BenchmarkResult(
        runId = plan?.runId ?: request.runId ?: "",
        status = status,
        error = error,
        model = plan?.modelName ?: request.model ?: "",
        modelSha256 = sha,
        modelSizeBytes = size,
        threads = plan?.settings?.threads ?: request.threads ?: 0,
        xnnpack = plan?.settings?.xnnpack ?: request.xnnpack ?: false,
        warmup = plan?.warmup ?: request.warmup ?: 0,
        runs = plan?.runs ?: request.runs ?: 0,
        text = plan?.text ?: request.text,
        loadMs = loadMs,
        firstInferenceMs = firstMs,
        latency = latency,
        samplesMs = samples,
        peakRssMb = PeakRss.currentMb(),
        device = device,
        onnxruntimeVersion = ortVersion ?: runCatching { IntentClassifier.runtimeVersion() }.getOrNull(),
    )

    private fun msSince(t0: Long): Double = (System.nanoTime() - t0) / 1e6

    companion object {
        const val RESULT_DIR = "benchmark"
        const val RESULT_FILE = "result.json"

        /** filesDir/benchmark/result.json, read with `adb shell run-as ai.edgetune.demo cat files/benchmark/result.json`. */
        fun resultFile(filesDir: File): File = File(File(filesDir, RESULT_DIR), RESULT_FILE)

        /** Removes the previous result (and a leftover temporary file) so a new file always means a new run. */
        fun clearResult(filesDir: File) {
            val target = resultFile(filesDir)
            target.delete()
            AtomicFiles.tmpFor(target).delete()
        }

        /** Writes `result.json.tmp`, then renames it to `result.json`. */
        fun writeResult(filesDir: File, result: BenchmarkResult) {
            AtomicFiles.writeText(resultFile(filesDir), result.toJsonText())
        }
    }
}
