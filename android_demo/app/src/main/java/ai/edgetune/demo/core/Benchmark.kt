package ai.edgetune.demo.core

import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.put
import kotlinx.serialization.json.putJsonArray
import kotlinx.serialization.json.putJsonObject
import java.io.File

/**
 * What `adb shell am start -n ai.edgetune.demo/.BenchmarkActivity --es model F --ei warmup N --ei runs N
 * --ei threads N --ez xnnpack true --es text T --es run_id ID` asked for; absent extras are null.
 */
data class BenchmarkRequest(
    val model: String? = null,
    val warmup: Int? = null,
    val runs: Int? = null,
    val threads: Int? = null,
    val xnnpack: Boolean? = null,
    val text: String? = null,
    val runId: String? = null,
) {
    companion object {
        const val MODEL = "model"
        const val WARMUP = "warmup"
        const val RUNS = "runs"
        const val THREADS = "threads"
        const val XNNPACK = "xnnpack"
        const val TEXT = "text"
        const val RUN_ID = "run_id"

        /**
         * Reads intent extras given as a key -> value map. Numbers and switches may arrive typed (`--ei`,
         * `--ez`) or as strings (`--es runs 50`); anything else is an error that names the extra.
         */
        fun fromExtras(extras: Map<String, Any?>): BenchmarkRequest = BenchmarkRequest(
            model = string(extras, MODEL),
            warmup = int(extras, WARMUP),
            runs = int(extras, RUNS),
            threads = int(extras, THREADS),
            xnnpack = bool(extras, XNNPACK),
            text = string(extras, TEXT),
            runId = string(extras, RUN_ID),
        )

        private fun string(extras: Map<String, Any?>, key: String): String? = extras[key]?.toString()

        private fun int(extras: Map<String, Any?>, key: String): Int? = when (val v = extras[key]) {
            null -> null
            is Int -> v
            is Long -> v.toInt().takeIf { it.toLong() == v } ?: throw IllegalArgumentException("extra $key=$v is out of range")
            is String -> v.trim().toIntOrNull() ?: throw IllegalArgumentException("extra $key must be an integer, not \"$v\"")
            else -> throw IllegalArgumentException("extra $key must be an integer (--ei $key N), not $v")
        }

        private fun bool(extras: Map<String, Any?>, key: String): Boolean? = when (val v = extras[key]) {
            null -> null
            is Boolean -> v
            is String -> when (v.trim().lowercase()) {
                "true", "1" -> true
                "false", "0" -> false
                else -> throw IllegalArgumentException("extra $key must be true or false, not \"$v\"")
            }
            else -> throw IllegalArgumentException("extra $key must be true or false (--ez $key true), not $v")
        }
    }
}

/** A [BenchmarkRequest] with every default filled in and the model resolved to a file. */
data class BenchmarkPlan(
    /** The model as the request named it (or the manifest's model file), reported as `model`. */
    val modelName: String,
    val modelFile: File,
    /** The manifest's hash when the model is the package's model or ORT-format model, else null. */
    val expectedSha256: String?,
    val warmup: Int,
    val runs: Int,
    val settings: SessionSettings,
    val text: String,
    val runId: String,
) {
    companion object {
        const val DEFAULT_WARMUP = 10
        const val DEFAULT_RUNS = 100

        /**
         * Defaults: the manifest's model, warmup 10, runs 100, threads 2, XNNPACK off, the first golden case's
         * text. A relative `model` is resolved in [packageDir]; an absolute one is used as is. [manifest] and
         * [golden] are the package in [packageDir] (null when there is none): when the model is one of its
         * files, the manifest's SHA-256 for it is what the benchmark checks.
         */
        fun resolve(
            request: BenchmarkRequest,
            packageDir: File,
            manifest: PackageManifest?,
            golden: ClassificationGolden?,
            newRunId: () -> String,
        ): BenchmarkPlan {
            val warmup = request.warmup ?: DEFAULT_WARMUP
            val runs = request.runs ?: DEFAULT_RUNS
            val threads = request.threads ?: SessionSettings.DEFAULT_THREADS
            require(warmup >= 0) { "warmup must be 0 or more, not $warmup" }
            require(runs >= 1) { "runs must be 1 or more, not $runs" }
            require(threads >= 1) { "threads must be 1 or more, not $threads" }
            val name = request.model ?: manifest?.model?.file
                ?: throw NoPackageException(PackageInstaller.NO_CLASSIFIER)
            val file = if (File(name).isAbsolute) File(name) else File(packageDir, name)
            val inPackage = file.relativeToOrNull(packageDir)?.invariantSeparatorsPath?.takeUnless { it.startsWith("..") }
            val text = request.text ?: golden?.cases?.firstOrNull()?.text
                ?: throw IllegalArgumentException(
                    "no --es text given, and no golden.json with a case beside the model to take it from",
                )
            return BenchmarkPlan(
                modelName = name,
                modelFile = file,
                expectedSha256 = inPackage?.let { manifest?.expectedSha256(it) },
                warmup = warmup,
                runs = runs,
                settings = SessionSettings(threads, request.xnnpack ?: false),
                text = text,
                runId = request.runId ?: newRunId(),
            )
        }

        /**
         * The folder whose package describes the requested model: the model's own folder when it is given
         * by absolute path (`edgetune bench --adb` pushes a whole package to files/bench/), else [installedDir].
         */
        fun packageFolder(request: BenchmarkRequest, installedDir: File): File =
            request.model?.let { File(it) }?.takeIf { it.isAbsolute }?.parentFile ?: installedDir
    }
}

/** The phone the benchmark ran on. */
data class DeviceInfo(
    val manufacturer: String,
    val model: String,
    val androidVersion: String,
    val sdkInt: Int,
    val abi: String,
) {
    companion object {
        /** The ABI the app runs as: the device's most preferred ABI that the APK ships native code for. */
        fun selectAbi(supported: List<String>, packaged: Collection<String>): String =
            supported.firstOrNull { it in packaged } ?: supported.firstOrNull().orEmpty()
    }
}

/**
 * `files/benchmark/result.json`. Both outcomes have every key; an error result has status "error", a
 * one-line `error`, and null for what was not measured.
 */
data class BenchmarkResult(
    val runId: String,
    val status: String,
    val error: String?,
    val model: String,
    val modelSha256: String?,
    val modelSizeBytes: Long?,
    val threads: Int,
    val xnnpack: Boolean,
    val warmup: Int,
    val runs: Int,
    val text: String?,
    val loadMs: Double?,
    val firstInferenceMs: Double?,
    val latency: LatencyStats?,
    val samplesMs: List<Double>,
    val peakRssMb: Double?,
    val device: DeviceInfo,
    val onnxruntimeVersion: String?,
) {
    fun toJson(): JsonObject = buildJsonObject {
        put("schema_version", SCHEMA_VERSION)
        put("run_id", runId)
        put("status", status)
        put("error", error)
        put("model", model)
        put("model_sha256", modelSha256)
        put("model_size_bytes", modelSizeBytes)
        put("threads", threads)
        put("xnnpack", xnnpack)
        put("warmup", warmup)
        put("runs", runs)
        put("text", text)
        put("load_ms", finite(loadMs))
        put("first_inference_ms", finite(firstInferenceMs))
        if (latency == null) {
            put("latency_ms", null as String?)
        } else {
            putJsonObject("latency_ms") {
                put("p50", finite(latency.p50))
                put("p90", finite(latency.p90))
                put("p99", finite(latency.p99))
                put("mean", finite(latency.mean))
                put("trimmed_mean", finite(latency.trimmedMean))
                put("min", finite(latency.min))
                put("max", finite(latency.max))
            }
        }
        putJsonArray("samples_ms") { samplesMs.forEach { add(JsonPrimitive(finite(it))) } }
        put("peak_rss_mb", finite(peakRssMb))
        putJsonObject("device") {
            put("manufacturer", device.manufacturer)
            put("model", device.model)
            put("android_version", device.androidVersion)
            put("sdk_int", device.sdkInt)
            put("abi", device.abi)
        }
        put("onnxruntime_version", onnxruntimeVersion)
    }

    fun toJsonText(): String = toJson().toString() + "\n"

    companion object {
        const val SCHEMA_VERSION = 1
        const val OK = "ok"
        const val ERROR = "error"

        /** JSON has no NaN or infinity: such a value is written as null. */
        private fun finite(x: Double?): Double? = x?.takeIf { it.isFinite() }

        /** One line describing [t]: package problems as their message, anything else with its type. */
        fun oneLine(t: Throwable): String {
            val message = t.message?.takeIf { it.isNotBlank() }
            val text = when {
                t is PackageException && message != null -> message
                message != null -> "${t.javaClass.simpleName}: $message"
                else -> t.javaClass.name
            }
            return text.replace(Regex("\\s+"), " ").trim().take(MAX_ERROR_CHARS)
        }

        private const val MAX_ERROR_CHARS = 1000
    }
}
