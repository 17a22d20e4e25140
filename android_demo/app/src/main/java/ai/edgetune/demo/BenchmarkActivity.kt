package ai.edgetune.demo

import ai.edgetune.demo.core.BenchmarkRequest
import ai.edgetune.demo.core.BenchmarkResult
import ai.edgetune.demo.runtime.BenchmarkRunner
import android.os.Bundle
import android.os.Process
import android.util.Log
import android.view.WindowManager
import androidx.activity.ComponentActivity
import androidx.lifecycle.lifecycleScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.util.UUID

/**
 * Headless benchmark, started from the host:
 *
 * ```
 * adb shell am start -W -n ai.edgetune.demo/.BenchmarkActivity --es model model.onnx --ei warmup 10 \
 *     --ei runs 100 --ei threads 2 [--ez xnnpack true] [--es text "..."] [--es run_id ID]
 * adb shell run-as ai.edgetune.demo cat files/benchmark/result.json
 * ```
 *
 * It runs in its own process (":benchmark" in the manifest), measures off the UI thread, writes
 * files/benchmark/result.json atomically, finishes, and ends that process so the next run starts fresh and
 * its peak RSS (VmHWM) belongs to that run alone.
 */
class BenchmarkActivity : ComponentActivity() {

    private var resultWritten = false
    private var extras: Map<String, Any?> = emptyMap()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        // Fix the run id now, so that an interrupted run reports the same id as a finished one would.
        val given = extrasOf(intent?.extras)
        val extras = if (given[BenchmarkRequest.RUN_ID] == null) {
            given + (BenchmarkRequest.RUN_ID to UUID.randomUUID().toString())
        } else {
            given
        }
        this.extras = extras
        BenchmarkRunner.clearResult(filesDir)
        lifecycleScope.launch {
            val result = withContext(Dispatchers.Default) {
                BenchmarkRunner(packageInstaller(this@BenchmarkActivity), deviceInfo()).run(extras)
            }
            withContext(Dispatchers.IO + NonCancellable) { write(result) }
            finish()
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        if (!resultWritten) {
            // Closed before the run finished (back button, system): leave an error result, never nothing.
            write(BenchmarkRunner(packageInstaller(this), deviceInfo()).interrupted(extras))
        }
        if (isFinishing) Process.killProcess(Process.myPid())
    }

    @Synchronized
    private fun write(result: BenchmarkResult) {
        if (resultWritten) return
        try {
            BenchmarkRunner.writeResult(filesDir, result)
        } catch (e: Exception) {
            Log.e(TAG, "cannot write ${BenchmarkRunner.resultFile(filesDir)}", e)
        }
        resultWritten = true
        Log.i(TAG, "benchmark ${result.runId}: ${result.status}${result.error?.let { " ($it)" } ?: ""}")
    }

    companion object {
        // `edgetune bench --adb` points at `adb logcat -s edgetune` when a run fails.
        private const val TAG = "edgetune"

        /** Intent extras as a plain map; numbers and switches keep their types (--ei, --ez). */
        @Suppress("DEPRECATION")
        fun extrasOf(bundle: Bundle?): Map<String, Any?> =
            bundle?.keySet()?.associateWith { bundle.get(it) }.orEmpty()
    }
}
