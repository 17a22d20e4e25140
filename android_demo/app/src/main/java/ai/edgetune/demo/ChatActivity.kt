package ai.edgetune.demo

import ai.edgetune.demo.core.ChatAdapter
import ai.edgetune.demo.core.ChatPrompt
import ai.edgetune.demo.core.ChatSpec
import ai.edgetune.demo.core.PackageException
import ai.edgetune.demo.llm.GenaiChat
import android.graphics.Color
import android.os.Bundle
import android.view.View
import android.view.inputmethod.EditorInfo
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.lifecycle.lifecycleScope
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext
import java.util.concurrent.atomic.AtomicBoolean

/**
 * Chat with the LLM package in assets/edgetune/llm/ through onnxruntime-genai: the folder is copied to
 * filesDir/edgetune/llm/ and opened by path, each message is put in the package's prompt format with its
 * system prompt, and tokens appear as they are generated. Each message starts a new conversation. A package of
 * a base model with adapters (one per task) shows a picker: each message runs with the picked adapter and its
 * system prompt, on the one loaded base (switching reloads nothing).
 */
class ChatActivity : ComponentActivity() {

    private lateinit var status: TextView
    private lateinit var transcript: TextView
    private lateinit var transcriptScroll: ScrollView
    private lateinit var prompt: EditText
    private lateinit var sendButton: Button
    private lateinit var stopButton: Button
    private lateinit var adapterPicker: Spinner

    private val modelLock = Mutex()
    @Volatile
    private var chat: GenaiChat? = null
    private var spec: ChatSpec? = null
    @Volatile
    private var adapter: ChatAdapter? = null
    private val stopRequested = AtomicBoolean(false)

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_chat)
        applySystemBarInsets(viewById(R.id.root))
        status = viewById(R.id.status)
        transcript = viewById(R.id.transcript)
        transcriptScroll = viewById(R.id.transcript_scroll)
        prompt = viewById(R.id.prompt)
        sendButton = viewById(R.id.send)
        stopButton = viewById(R.id.stop)
        adapterPicker = viewById(R.id.adapter)

        bindAction(sendButton, prompt, EditorInfo.IME_ACTION_SEND) { send() }
        stopButton.setOnClickListener { stopRequested.set(true) }
        load()
    }

    override fun onDestroy() {
        super.onDestroy()
        // Under the lock: after any generation ends, and also catching a model that a load still in
        // progress assigns after this point.
        AppScope.scope.launch {
            modelLock.withLock {
                chat?.close()
                chat = null
            }
        }
    }

    private fun load() {
        lifecycleScope.launch {
            try {
                var shownPercent = -1
                val pkg = withContext(Dispatchers.IO) {
                    packageInstaller(this@ChatActivity).installChat { copied, total ->
                        val percent = (100 * copied / total).toInt().coerceAtMost(100)
                        if (percent != shownPercent) {
                            shownPercent = percent
                            runOnUiThread { showStatus(getString(R.string.chat_copying, percent)) }
                        }
                    }
                }
                showStatus(getString(R.string.chat_loading))
                val opened = withContext(Dispatchers.Default) {
                    modelLock.withLock { GenaiChat.open(pkg.dir, pkg.manifest.chat?.adapters.orEmpty()).also { chat = it } }
                }
                val chatSpec = checkNotNull(pkg.manifest.chat)
                spec = chatSpec
                showAdapters(chatSpec.adapters)
                showStatus(getString(R.string.chat_ready, pkg.manifest.recipe.ifEmpty { pkg.manifest.model.file }, chatSpec.maxNewTokens))
                sendButton.isEnabled = opened === chat
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) {
                showError(e)
            }
        }
    }

    private fun send() {
        val chatSpec = spec ?: return
        val userText = prompt.text.toString().trim()
        if (userText.isEmpty()) return
        val picked = adapter
        val system = picked?.systemPrompt?.ifEmpty { null } ?: chatSpec.systemPrompt
        val fullPrompt = try {
            ChatPrompt.render(chatSpec.promptFormat, system, userText)
        } catch (e: IllegalArgumentException) {
            showError(PackageException("manifest.json chat.prompt_format: ${e.message}"))
            return
        }
        prompt.text.clear()
        val who = getString(R.string.chat_assistant) + (picked?.let { " (${it.name})" } ?: "")
        appendTranscript("${getString(R.string.chat_you)}: $userText\n$who: ")
        sendButton.isEnabled = false
        stopButton.isEnabled = true
        showStatus(getString(R.string.chat_generating))
        stopRequested.set(false)
        lifecycleScope.launch {
            val job = coroutineContext[Job]
            try {
                val stats = withContext(Dispatchers.Default) {
                    modelLock.withLock {
                        val model = chat ?: throw IllegalStateException("the model is not loaded")
                        model.generate(
                            prompt = fullPrompt,
                            maxNewTokens = chatSpec.maxNewTokens,
                            isCancelled = { stopRequested.get() || job?.isActive == false },
                            adapter = picked?.name,
                        ) { piece -> runOnUiThread { appendTranscript(piece) } }
                    }
                }
                val summary = if (stopRequested.get()) R.string.chat_stopped else R.string.chat_done
                showStatus(getString(summary, stats.describe()))
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) {
                showError(e)
            } finally {
                appendTranscript("\n\n")
                sendButton.isEnabled = chat != null
                stopButton.isEnabled = false
            }
        }
    }

    /** The adapter picker, shown when the package is a base model with adapters; the first is active. */
    private fun showAdapters(adapters: List<ChatAdapter>) {
        adapter = adapters.firstOrNull()
        if (adapters.isEmpty()) return
        adapterPicker.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, adapters.map { it.name })
        adapterPicker.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                adapter = adapters[position]
            }

            override fun onNothingSelected(parent: AdapterView<*>?) {}
        }
        adapterPicker.visibility = View.VISIBLE
    }

    private fun appendTranscript(text: String) {
        transcript.append(text)
        transcriptScroll.post { transcriptScroll.fullScroll(ScrollView.FOCUS_DOWN) }
    }

    private fun showStatus(message: String) {
        status.setTextColor(transcript.currentTextColor)
        status.text = message
    }

    private fun showError(e: Throwable) {
        status.setTextColor(Color.rgb(0xB0, 0x00, 0x20))
        status.text = if (e is PackageException) e.message else "${e.javaClass.simpleName}: ${e.message}"
    }
}
