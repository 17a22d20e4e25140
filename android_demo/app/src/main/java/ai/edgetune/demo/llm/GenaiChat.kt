package ai.edgetune.demo.llm

import ai.edgetune.demo.core.ChatAdapter
import ai.edgetune.demo.core.GenerationStats
import ai.onnxruntime.genai.Adapters
import ai.onnxruntime.genai.Generator
import ai.onnxruntime.genai.GeneratorParams
import ai.onnxruntime.genai.Model
import ai.onnxruntime.genai.Tokenizer
import java.io.File

/**
 * An onnxruntime-genai model folder (genai_config.json, model.onnx, model.onnx.data, tokenizer files) opened by
 * path; a base model's `.onnx_adapter` files are loaded beside it once, and each generation picks one. Not
 * thread-safe: callers serialize [generate] and [close].
 */
class GenaiChat private constructor(
    private val model: Model,
    private val tokenizer: Tokenizer,
    private val adapters: Adapters?,
) : AutoCloseable {

    /**
     * Greedy generation of at most [maxNewTokens] tokens after [prompt] (already in the chat format), with the
     * loaded adapter named [adapter] active (null: the model as it is). Switching adapters reloads nothing. Each
     * decoded piece goes to [onPiece] as soon as it is generated; [isCancelled] is polled between tokens.
     */
    fun generate(
        prompt: String,
        maxNewTokens: Int,
        isCancelled: () -> Boolean,
        adapter: String? = null,
        onPiece: (String) -> Unit,
    ): GenerationStats {
        val start = System.nanoTime()
        val promptIds = tokenizer.encode(prompt).use { it.getSequence(0) }
        var firstTokenMs = 0.0
        var newTokens = 0
        GeneratorParams(model).use { params ->
            params.setSearchOption("max_length", (promptIds.size + maxNewTokens).toDouble())
            params.setSearchOption("do_sample", false)
            Generator(model, params).use { generator ->
                if (adapter != null) generator.setActiveAdapter(checkNotNull(adapters) { "no adapters loaded" }, adapter)
                tokenizer.createStream().use { stream ->
                    generator.appendTokens(promptIds)
                    while (!generator.isDone() && newTokens < maxNewTokens && !isCancelled()) {
                        generator.generateNextToken()
                        val token = generator.getLastTokenInSequence(0)
                        newTokens++
                        if (newTokens == 1) firstTokenMs = (System.nanoTime() - start) / 1e6
                        val piece = stream.decode(token)
                        if (piece.isNotEmpty()) onPiece(piece)
                    }
                }
            }
        }
        return GenerationStats(promptIds.size, newTokens, firstTokenMs, (System.nanoTime() - start) / 1e6)
    }

    override fun close() {
        adapters?.close()
        tokenizer.close()
        model.close()
    }

    companion object {
        /** Loads the model folder [dir] (the folder holding genai_config.json) and each of [adapters] in it. */
        fun open(dir: File, adapters: List<ChatAdapter> = emptyList()): GenaiChat {
            val model = Model(dir.absolutePath)
            var loaded: Adapters? = null
            try {
                if (adapters.isNotEmpty()) {
                    loaded = Adapters(model)
                    for (a in adapters) loaded.loadAdapter(File(dir, a.file).absolutePath, a.name)
                }
                return GenaiChat(model, Tokenizer(model), loaded)
            } catch (e: Exception) {
                loaded?.close()
                model.close()
                throw e
            }
        }
    }
}
