package ai.edgetune.demo.core

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

class BenchmarkTest {

    private val manifest = PackageManifest.parse(Fixtures.classifierManifest())
    private val golden = ClassificationGolden.parse(Fixtures.GOLDEN)
    private val packageDir = File("/data/user/0/ai.edgetune.demo/files/edgetune")

    @Test
    fun extrasKeepTheirTypes() {
        val r = BenchmarkRequest.fromExtras(
            mapOf("model" to "model.ort", "warmup" to 3, "runs" to 50, "threads" to 4, "xnnpack" to true, "text" to "hi", "run_id" to "r1"),
        )
        assertEquals(BenchmarkRequest("model.ort", 3, 50, 4, true, "hi", "r1"), r)
    }

    @Test
    fun extrasGivenAsStringsAreParsed() {
        val r = BenchmarkRequest.fromExtras(mapOf("runs" to "20", "xnnpack" to "false"))
        assertEquals(20, r.runs)
        assertEquals(false, r.xnnpack)
    }

    @Test
    fun badExtraIsNamed() {
        val e = assertThrows(IllegalArgumentException::class.java) { BenchmarkRequest.fromExtras(mapOf("runs" to "many")) }
        assertEquals("extra runs must be an integer, not \"many\"", e.message)
    }

    @Test
    fun defaultsComeFromThePackage() {
        val plan = BenchmarkPlan.resolve(BenchmarkRequest(), packageDir, manifest, golden) { "generated" }
        assertEquals("model.onnx", plan.modelName)
        assertEquals(File(packageDir, "model.onnx"), plan.modelFile)
        assertEquals(Fixtures.MODEL_SHA, plan.expectedSha256)
        assertEquals(10, plan.warmup)
        assertEquals(100, plan.runs)
        assertEquals(SessionSettings(2, false), plan.settings)
        assertEquals("turn on the kitchen lights", plan.text)
        assertEquals("generated", plan.runId)
    }

    @Test
    fun ortModelByNameIsCheckedAgainstItsHash() {
        val plan = BenchmarkPlan.resolve(BenchmarkRequest(model = "model.ort"), packageDir, manifest, golden) { "x" }
        assertEquals(File(packageDir, "model.ort"), plan.modelFile)
        assertEquals(Fixtures.ORT_SHA, plan.expectedSha256)
    }

    @Test
    fun absoluteModelIsUsedAsIsWithoutHash() {
        val request = BenchmarkRequest(model = "/data/local/tmp/other.onnx", text = "lights", threads = 1, xnnpack = true, runId = "r9")
        val plan = BenchmarkPlan.resolve(request, packageDir, null, null) { "unused" }
        assertEquals(File("/data/local/tmp/other.onnx"), plan.modelFile)
        assertNull(plan.expectedSha256)
        assertEquals(SessionSettings(1, true), plan.settings)
        assertEquals("r9", plan.runId)
    }

    @Test
    fun absoluteModelBesideItsManifestIsCheckedAgainstIt() {
        // `edgetune bench --adb` pushes a whole package to files/bench/ and names the model by absolute path.
        val bench = File("/data/user/0/ai.edgetune.demo/files/bench")
        val request = BenchmarkRequest(model = File(bench, "model.onnx").path)
        assertEquals(bench, BenchmarkPlan.packageFolder(request, packageDir))
        val plan = BenchmarkPlan.resolve(request, bench, manifest, golden) { "x" }
        assertEquals(File(bench, "model.onnx"), plan.modelFile)
        assertEquals(Fixtures.MODEL_SHA, plan.expectedSha256)
        assertEquals("turn on the kitchen lights", plan.text)
        assertEquals(File(bench, "model.onnx").path, plan.modelName)
    }

    @Test
    fun relativeModelUsesTheInstalledPackage() {
        assertEquals(packageDir, BenchmarkPlan.packageFolder(BenchmarkRequest(model = "model.ort"), packageDir))
        assertEquals(packageDir, BenchmarkPlan.packageFolder(BenchmarkRequest(), packageDir))
    }

    @Test
    fun absoluteModelWithoutPackageNeedsText() {
        val e = assertThrows(IllegalArgumentException::class.java) {
            BenchmarkPlan.resolve(BenchmarkRequest(model = "/data/local/tmp/m.onnx"), File("/data/local/tmp"), null, null) { "x" }
        }
        assertTrue(e.message!!.startsWith("no --es text given"))
    }

    @Test
    fun noPackageAndNoModelSaysHowToMakeOne() {
        val e = assertThrows(NoPackageException::class.java) {
            BenchmarkPlan.resolve(BenchmarkRequest(), packageDir, null, null) { "x" }
        }
        assertEquals("No model packaged: run edgetune build recipes/intent-minilm.yaml", e.message)
    }

    @Test
    fun invalidCountsAreRejected() {
        for (request in listOf(BenchmarkRequest(runs = 0), BenchmarkRequest(warmup = -1), BenchmarkRequest(threads = 0))) {
            assertThrows(IllegalArgumentException::class.java) {
                BenchmarkPlan.resolve(request, packageDir, manifest, golden) { "x" }
            }
        }
    }

    @Test
    fun abiIsTheFirstSupportedOneThatIsPackaged() {
        assertEquals("arm64-v8a", DeviceInfo.selectAbi(listOf("arm64-v8a", "armeabi-v7a"), listOf("arm64-v8a", "x86_64")))
        assertEquals("x86_64", DeviceInfo.selectAbi(listOf("x86_64", "x86", "arm64-v8a"), listOf("arm64-v8a", "x86_64")))
        assertEquals("armeabi-v7a", DeviceInfo.selectAbi(listOf("armeabi-v7a"), listOf("arm64-v8a", "x86_64")))
    }

    private val device = DeviceInfo("Google", "Pixel 8", "15", 35, "arm64-v8a")

    private fun okResult(samples: List<Double>) = BenchmarkResult(
        runId = "r1", status = BenchmarkResult.OK, error = null, model = "model.onnx", modelSha256 = Fixtures.MODEL_SHA,
        modelSizeBytes = 23000000L, threads = 2, xnnpack = false, warmup = 10, runs = samples.size, text = "say \"hi\"\n",
        loadMs = 120.5, firstInferenceMs = 30.25, latency = LatencyStats.of(samples), samplesMs = samples,
        peakRssMb = 150.0, device = device, onnxruntimeVersion = "1.31.0",
    )

    @Test
    fun resultJsonHasExactlyTheSchemaKeys() {
        val json = Json.parseToJsonElement(okResult(listOf(2.0, 1.0, 3.0)).toJsonText()).jsonObject
        assertEquals(
            listOf(
                "schema_version", "run_id", "status", "error", "model", "model_sha256", "model_size_bytes", "threads",
                "xnnpack", "warmup", "runs", "text", "load_ms", "first_inference_ms", "latency_ms", "samples_ms",
                "peak_rss_mb", "device", "onnxruntime_version",
            ),
            json.keys.toList(),
        )
        assertEquals(listOf("p50", "p90", "p99", "mean", "trimmed_mean", "min", "max"), json["latency_ms"]!!.jsonObject.keys.toList())
        assertEquals(listOf("manufacturer", "model", "android_version", "sdk_int", "abi"), json["device"]!!.jsonObject.keys.toList())
    }

    @Test
    fun resultJsonValues() {
        val json = Json.parseToJsonElement(okResult(listOf(2.0, 1.0, 3.0)).toJsonText()).jsonObject
        assertEquals("1", json["schema_version"]!!.jsonPrimitive.content)
        assertEquals("ok", json["status"]!!.jsonPrimitive.content)
        assertEquals(JsonNull, json["error"])
        assertEquals("false", json["xnnpack"]!!.jsonPrimitive.content)
        assertEquals("23000000", json["model_size_bytes"]!!.jsonPrimitive.content)
        assertEquals("say \"hi\"\n", json["text"]!!.jsonPrimitive.content)
        assertEquals(120.5, json["load_ms"]!!.jsonPrimitive.content.toDouble(), 0.0)
        assertEquals(2.0, json["latency_ms"]!!.jsonObject["p50"]!!.jsonPrimitive.content.toDouble(), 0.0)
        assertEquals(listOf(2.0, 1.0, 3.0), (json["samples_ms"] as JsonArray).map { it.jsonPrimitive.content.toDouble() })
        assertEquals("35", json["device"]!!.jsonObject["sdk_int"]!!.jsonPrimitive.content)
        assertEquals("1.31.0", json["onnxruntime_version"]!!.jsonPrimitive.content)
    }

    @Test
    fun errorResultKeepsEveryKeyWithNulls() {
        val result = okResult(listOf(1.0)).copy(
            status = BenchmarkResult.ERROR, error = BenchmarkResult.oneLine(IllegalStateException("bad\nthing  here")),
            loadMs = null, firstInferenceMs = null, latency = null, samplesMs = emptyList(),
        )
        val json = Json.parseToJsonElement(result.toJsonText()).jsonObject
        assertEquals(19, json.size)
        assertEquals("error", json["status"]!!.jsonPrimitive.content)
        assertEquals("IllegalStateException: bad thing here", json["error"]!!.jsonPrimitive.content)
        assertEquals(JsonNull, json["latency_ms"])
        assertEquals(JsonNull, json["load_ms"])
        assertEquals(0, (json["samples_ms"] as JsonArray).size)
    }

    @Test
    fun nonFiniteNumbersBecomeNull() {
        val json = Json.parseToJsonElement(okResult(listOf(1.0)).copy(peakRssMb = Double.NaN).toJsonText()).jsonObject
        assertEquals(JsonNull, json["peak_rss_mb"])
    }

    @Test
    fun packageProblemsAreReportedByTheirMessage() {
        assertEquals("stale or corrupt package: x", BenchmarkResult.oneLine(PackageException("stale or corrupt package: x")))
        assertEquals("java.lang.RuntimeException", BenchmarkResult.oneLine(RuntimeException()))
        val line = BenchmarkResult.oneLine(RuntimeException("a\n".repeat(2000)))
        assertFalse(line.contains('\n'))
        assertTrue(line.length <= 1000)
    }

    @Test
    fun resultJsonIsOneObjectPerFile() {
        val text = okResult(listOf(1.0)).toJsonText()
        assertTrue(text.endsWith("}\n"))
        assertTrue(Json.parseToJsonElement(text) is JsonObject)
    }
}
