package ai.edgetune.demo

import ai.edgetune.demo.core.PackageManifest
import ai.edgetune.demo.runtime.BenchmarkRunner
import android.content.Intent
import android.os.Build
import android.os.SystemClock
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File
import java.util.UUID

/** BenchmarkActivity, started by an Intent as adb starts it, writes a complete files/benchmark/result.json. */
@RunWith(AndroidJUnit4::class)
class BenchmarkActivityTest {

    private val context = InstrumentationRegistry.getInstrumentation().targetContext
    private val resultFile: File = BenchmarkRunner.resultFile(context.filesDir)

    private val topKeys = setOf(
        "schema_version", "run_id", "status", "error", "model", "model_sha256", "model_size_bytes", "threads",
        "xnnpack", "warmup", "runs", "text", "load_ms", "first_inference_ms", "latency_ms", "samples_ms",
        "peak_rss_mb", "device", "onnxruntime_version",
    )

    private fun start(runId: String, vararg extras: Pair<String, Any>) {
        val intent = Intent(context, BenchmarkActivity::class.java)
            .addFlags(Intent.FLAG_ACTIVITY_NEW_TASK)
            .putExtra("run_id", runId)
        for ((key, value) in extras) {
            when (value) {
                is Int -> intent.putExtra(key, value)
                is Boolean -> intent.putExtra(key, value)
                else -> intent.putExtra(key, value.toString())
            }
        }
        context.startActivity(intent)
    }

    /** Polls for the result of [runId]; the file is renamed into place whole, so any read is complete. */
    private fun awaitResult(runId: String, timeoutMs: Long = 180_000): JsonObject {
        val deadline = SystemClock.uptimeMillis() + timeoutMs
        while (SystemClock.uptimeMillis() < deadline) {
            if (resultFile.isFile) {
                val json = Json.parseToJsonElement(resultFile.readText()).jsonObject
                if (json["run_id"]?.jsonPrimitive?.content == runId) return json
            }
            SystemClock.sleep(200)
        }
        fail("no result.json for run $runId within $timeoutMs ms")
        throw AssertionError()
    }

    private fun JsonObject.double(key: String) = this[key]!!.jsonPrimitive.content.toDouble()

    private fun JsonObject.text(key: String) = this[key]!!.jsonPrimitive.content

    @Test
    fun writesAValidResult() {
        val runId = "androidtest-" + UUID.randomUUID()
        start(runId, "warmup" to 2, "runs" to 5, "threads" to 1)
        val json = awaitResult(runId)

        assertEquals("status (error: ${json["error"]})", "ok", json.text("status"))
        assertEquals(topKeys, json.keys)
        assertEquals(JsonNull, json["error"])
        assertEquals("1", json.text("schema_version"))
        assertEquals("2", json.text("warmup"))
        assertEquals("5", json.text("runs"))
        assertEquals("1", json.text("threads"))
        assertEquals("false", json.text("xnnpack"))

        val manifest = PackageManifest.parse(File(context.filesDir, "edgetune/manifest.json").readText())
        assertEquals(manifest.model.file, json.text("model"))
        assertEquals(manifest.model.sha256, json.text("model_sha256"))
        assertEquals(File(context.filesDir, "edgetune/${manifest.model.file}").length().toString(), json.text("model_size_bytes"))

        val samples = (json["samples_ms"] as JsonArray).map { it.jsonPrimitive.content.toDouble() }
        assertEquals(5, samples.size)
        assertTrue(samples.all { it > 0.0 })
        val latency = json["latency_ms"]!!.jsonObject
        assertEquals(setOf("p50", "p90", "p99", "mean", "trimmed_mean", "min", "max"), latency.keys)
        assertEquals(samples.min(), latency.double("min"), 1e-9)
        assertEquals(samples.max(), latency.double("max"), 1e-9)
        assertTrue(latency.double("min") <= latency.double("p50"))
        assertTrue(latency.double("p50") <= latency.double("p90"))
        assertTrue(latency.double("p90") <= latency.double("p99"))
        assertTrue(latency.double("p99") <= latency.double("max"))
        assertTrue(json.double("load_ms") > 0.0)
        assertTrue(json.double("first_inference_ms") > 0.0)
        assertTrue(json.double("peak_rss_mb") > 0.0)

        val device = json["device"]!!.jsonObject
        assertEquals(Build.VERSION.SDK_INT.toString(), device.text("sdk_int"))
        assertTrue(device.text("abi") in PACKAGED_ABIS)
        assertNotEquals("", json.text("onnxruntime_version"))
        assertFalse(File(resultFile.path + ".tmp").exists())
    }

    @Test
    fun writesAnErrorResultForAMissingModel() {
        val runId = "androidtest-" + UUID.randomUUID()
        start(runId, "model" to "does-not-exist.onnx", "runs" to 3)
        val json = awaitResult(runId)
        assertEquals("error", json.text("status"))
        assertEquals(topKeys, json.keys)
        val error = json.text("error")
        assertTrue(error, error.contains("does-not-exist.onnx"))
        assertFalse(error.contains('\n'))
        assertEquals(JsonNull, json["latency_ms"])
        assertEquals(0, (json["samples_ms"] as JsonArray).size)
    }
}
