package ai.edgetune.demo

import ai.edgetune.demo.core.InstalledPackage
import ai.edgetune.demo.core.PackageException
import ai.edgetune.demo.core.Scores
import ai.edgetune.demo.core.SessionSettings
import ai.edgetune.demo.runtime.ClassifierHolder
import ai.edgetune.demo.runtime.IntentClassifier
import android.content.Intent
import android.graphics.Color
import android.os.Bundle
import android.view.inputmethod.EditorInfo
import android.widget.Button
import android.widget.EditText
import android.widget.RadioGroup
import android.widget.Switch
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.lifecycle.lifecycleScope
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext
import java.util.Locale

/**
 * Type a command, tap Classify, see the intent, every label's probability and the latency. The thread count
 * and the XNNPACK switch recreate the ONNX Runtime session. Copying, session creation and inference run off
 * the UI thread; [sessionLock] keeps a reload from closing a session an inference is using.
 */
class MainActivity : ComponentActivity() {

    private lateinit var input: EditText
    private lateinit var classifyButton: Button
    private lateinit var status: TextView
    private lateinit var packageInfo: TextView
    private lateinit var prediction: TextView
    private lateinit var latency: TextView
    private lateinit var probabilities: TextView
    private lateinit var threadsGroup: RadioGroup
    private lateinit var xnnpackSwitch: Switch

    private val sessionLock = Mutex()
    private val holder = ClassifierHolder()
    private var installed: InstalledPackage? = null

    /** Incremented by each reload; an older reload that finishes late does not touch the screen. */
    private var loadGeneration = 0
    private var classifying = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        applySystemBarInsets(viewById(R.id.root))
        input = viewById(R.id.input)
        classifyButton = viewById(R.id.classify)
        status = viewById(R.id.status)
        packageInfo = viewById(R.id.package_info)
        prediction = viewById(R.id.prediction)
        latency = viewById(R.id.latency)
        probabilities = viewById(R.id.probabilities)
        threadsGroup = viewById(R.id.threads)
        xnnpackSwitch = viewById(R.id.xnnpack)

        bindAction(classifyButton, input, EditorInfo.IME_ACTION_GO) { classify() }
        threadsGroup.setOnCheckedChangeListener { _, _ -> reload() }
        xnnpackSwitch.setOnCheckedChangeListener { _, _ -> reload() }
        viewById<Button>(R.id.open_chat).setOnClickListener {
            startActivity(Intent(this, ChatActivity::class.java))
        }
        reload()
    }

    override fun onDestroy() {
        super.onDestroy()
        // lifecycleScope is cancelled now; close the session once any running inference has let go of it.
        val lock = sessionLock
        val toClose = holder
        AppScope.scope.launch { lock.withLock { toClose.close() } }
    }

    private fun settings(): SessionSettings = SessionSettings(
        threads = when (threadsGroup.checkedRadioButtonId) {
            R.id.threads_1 -> 1
            R.id.threads_4 -> 4
            else -> 2
        },
        xnnpack = xnnpackSwitch.isChecked,
    )

    /** Copies the package if needed, then (re)creates the session with the current settings. */
    private fun reload() {
        val settings = settings()
        val generation = ++loadGeneration
        classifyButton.isEnabled = false
        showStatus(getString(if (installed == null) R.string.status_installing else R.string.status_loading, settings.describe()))
        lifecycleScope.launch {
            try {
                val pkg = installed ?: withContext(Dispatchers.IO) { packageInstaller(this@MainActivity).installClassifier() }
                    .also { installed = it }
                if (generation != loadGeneration) return@launch
                showPackage(pkg)
                showStatus(getString(R.string.status_loading, settings.describe()))
                val loadMs = withContext(Dispatchers.Default) {
                    sessionLock.withLock { holder.replace(pkg.modelFile, pkg.manifest, settings) }
                }
                if (generation != loadGeneration) return@launch
                showStatus(getString(R.string.status_loaded, loadMs, settings.describe()))
                classifyButton.isEnabled = !classifying
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) {
                if (generation == loadGeneration) showError(e)
            }
        }
    }

    private fun classify() {
        val text = input.text.toString().trim()
        val pkg = installed ?: return
        if (text.isEmpty()) {
            showStatus(getString(R.string.empty_input))
            return
        }
        classifying = true
        classifyButton.isEnabled = false
        showStatus(getString(R.string.status_classifying))
        lifecycleScope.launch {
            try {
                val (logits, ms) = withContext(Dispatchers.Default) {
                    sessionLock.withLock {
                        val classifier = holder.loaded()
                        val t0 = System.nanoTime()
                        val out = classifier.logits(text)
                        out to (System.nanoTime() - t0) / 1e6
                    }
                }
                val ranked = Scores.ranked(pkg.manifest.labels, logits)
                val width = ranked.maxOf { it.label.length }
                prediction.text = ranked.first().label
                latency.text = getString(R.string.latency, ms)
                probabilities.text = ranked.joinToString("\n") {
                    String.format(Locale.US, "%-${width}s  %.4f", it.label, it.probability)
                }
                showStatus("")
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) {
                showError(e)
            } finally {
                classifying = false
                classifyButton.isEnabled = holder.isOpen
            }
        }
    }

    private fun showPackage(pkg: InstalledPackage) {
        val m = pkg.manifest
        val version = runCatching { IntentClassifier.runtimeVersion() }.getOrDefault("?")
        packageInfo.text = getString(
            R.string.package_info,
            m.recipe.ifEmpty { "model" },
            m.model.precision ?: m.model.file,
            m.labels.size,
            version,
        )
    }

    private fun showStatus(message: String) {
        status.setTextColor(prediction.currentTextColor)
        status.text = message
    }

    private fun showError(e: Throwable) {
        status.setTextColor(Color.rgb(0xB0, 0x00, 0x20))
        status.text = if (e is PackageException) e.message else "${e.javaClass.simpleName}: ${e.message}"
    }
}
