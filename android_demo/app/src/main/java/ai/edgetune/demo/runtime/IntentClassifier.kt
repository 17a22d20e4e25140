package ai.edgetune.demo.runtime

import ai.edgetune.demo.core.PackageManifest
import ai.edgetune.demo.core.SessionSettings
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.extensions.OrtxPackage
import java.io.File

/**
 * An ONNX Runtime session over a packaged classifier: one string in (the tokenizer is inside the graph),
 * logits out. Not thread-safe: callers serialize [logits] and [close].
 */
class IntentClassifier private constructor(
    private val env: OrtEnvironment,
    private val options: OrtSession.SessionOptions,
    private val session: OrtSession,
    val inputName: String,
    val outputName: String,
) : AutoCloseable {

    /**
     * Logits for [text]: a 1-D string tensor of length 1 goes in, the float output is flattened. Only
     * [outputName] is requested, so the result holds that one value at index 0 (read by index: the
     * by-name lookup returns java.util.Optional, which the API 23 compile check has no class for).
     */
    fun logits(text: String): FloatArray =
        OnnxTensor.createTensor(env, arrayOf(text), longArrayOf(1)).use { input ->
            session.run(mapOf(inputName to input), setOf(outputName)).use { result ->
                val tensor = result.get(0) as? OnnxTensor
                    ?: throw IllegalStateException("output $outputName is not a tensor")
                val buffer = tensor.floatBuffer
                    ?: throw IllegalStateException("output $outputName is ${tensor.info.type}, not float32")
                FloatArray(buffer.remaining()).also { buffer.get(it) }
            }
        }

    override fun close() {
        session.close()
        // The options own the handle of the custom-op library the session's kernels live in: close them last.
        options.close()
    }

    companion object {
        /** The ONNX Runtime version the app was built with, e.g. "1.31.0". */
        fun runtimeVersion(): String = OrtEnvironment.getEnvironment().version

        /**
         * Opens [modelFile] by path with [settings]: intra-op threads, the onnxruntime-extensions custom ops
         * when the manifest's tokenizer needs them (or when there is no manifest to say), and XNNPACK.
         */
        fun open(modelFile: File, manifest: PackageManifest?, settings: SessionSettings): IntentClassifier {
            val env = OrtEnvironment.getEnvironment()
            val options = OrtSession.SessionOptions()
            try {
                options.setIntraOpNumThreads(settings.threads)
                if (manifest == null || manifest.usesExtensions) {
                    options.registerCustomOpLibrary(OrtxPackage.getLibraryPath())
                }
                if (settings.xnnpack) {
                    options.addXnnpack(mapOf("intra_op_num_threads" to "${settings.threads}"))
                }
                val session = env.createSession(modelFile.absolutePath, options)
                try {
                    val inputName = manifest?.inputs?.firstOrNull()?.name ?: session.inputNames.first()
                    val outputName = manifest?.outputs?.firstOrNull()?.name ?: session.outputNames.first()
                    require(inputName in session.inputNames) {
                        "the model's inputs are ${session.inputNames}; the manifest names $inputName"
                    }
                    require(outputName in session.outputNames) {
                        "the model's outputs are ${session.outputNames}; the manifest names $outputName"
                    }
                    return IntentClassifier(env, options, session, inputName, outputName)
                } catch (e: Exception) {
                    session.close()
                    throw e
                }
            } catch (e: Exception) {
                options.close()
                throw e
            }
        }
    }
}

/** The main screen's current classifier; replaced when the thread count or XNNPACK switch changes. */
class ClassifierHolder : AutoCloseable {
    private var current: IntentClassifier? = null

    val isOpen: Boolean get() = current != null

    /** Closes the current session and opens [modelFile] with [settings]; returns the load time in ms. */
    fun replace(modelFile: File, manifest: PackageManifest, settings: SessionSettings): Double {
        close()
        val t0 = System.nanoTime()
        current = IntentClassifier.open(modelFile, manifest, settings)
        return (System.nanoTime() - t0) / 1e6
    }

    fun loaded(): IntentClassifier = current ?: throw IllegalStateException("the model is not loaded")

    override fun close() {
        current?.close()
        current = null
    }
}
