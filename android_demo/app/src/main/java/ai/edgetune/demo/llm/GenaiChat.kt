package ai.edgetune.demo.llm

import ai.edgetune.demo.core.GenerationStats
import ai.onnxruntime.genai.Generator
import ai.onnxruntime.genai.GeneratorParams
import ai.onnxruntime.genai.Model
import ai.onnxruntime.genai.Tokenizer
import java.io.File

/**
 * An onnxruntime-genai model folder (genai_config.json, model.onnx, model.onnx.data, tokenizer files) opened by
 * path. Not thread-safe: callers serialize [generate] and [close].
 */
class GenaiChat private constructor(private val model: Model, private val tokenizer: Tokenizer) : AutoCloseable {

    /**
     * Greedy generation of at most [maxNewTokens] tokens after [prompt] (already in the chat format). Each
     * decoded piece goes to [onPiece] as soon as it is generated; [isCancelled] is polled between tokens.
     */
    fun generate(
        prompt: String,
        maxNewTokens: Int,
        isCancelled: () -> Boolean,
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
        tokenizer.close()
        model.close()
    }

    companion object {
        /** Loads the model folder [dir] (the folder holding genai_config.json). */
        fun open(dir: File): GenaiChat {
            val model = Model(dir.absolutePath)
            try {
                return GenaiChat(model, Tokenizer(model))
            } catch (e: Exception) {
                model.close()
                throw e
            }
        }
    }
}
