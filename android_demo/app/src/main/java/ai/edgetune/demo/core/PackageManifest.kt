package ai.edgetune.demo.core

/** One model file of a package: the file ONNX Runtime opens, its hash, and every file it needs beside it. */
data class ModelEntry(
    val file: String,
    val sha256: String,
    val sizeBytes: Long,
    val precision: String?,
    /** All files of this model (the main file first is not guaranteed), e.g. model.onnx and model.onnx.data. */
    val files: List<String>,
)

data class TensorSpec(val name: String, val dtype: String, val shape: List<Long>)

data class TokenizerSpec(val kind: String, val op: String?, val library: String?, val maxLength: Int?, val file: String?)

/** One task's LoRA adapter over the package's base model: an `.onnx_adapter` file and its system prompt. */
data class ChatAdapter(val name: String, val file: String, val systemPrompt: String)

data class ChatSpec(
    val systemPrompt: String,
    val promptFormat: String,
    val maxNewTokens: Int,
    /** Empty for a merged model; else the model is the base, and generation runs with one of these active. */
    val adapters: List<ChatAdapter> = emptyList(),
)

data class GoldenRef(val file: String, val count: Int)

/**
 * `manifest.json`, written by `edgetune package` next to the model in `assets/edgetune/` (classifier) or
 * `assets/edgetune/llm/` (causal LM). File names in it are relative to the manifest's folder.
 */
data class PackageManifest(
    val schemaVersion: Int,
    val task: String,
    val recipe: String,
    val model: ModelEntry,
    val ortModel: ModelEntry?,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val tokenizer: TokenizerSpec,
    val labels: List<String>,
    val golden: GoldenRef,
    val chat: ChatSpec?,
    val versions: Map<String, String>,
) {
    val isClassification: Boolean get() = task == TASK_CLASSIFICATION

    /** The classifier graph calls a custom op from onnxruntime-extensions, which must be registered first. */
    val usesExtensions: Boolean get() = tokenizer.library == EXTENSIONS_LIBRARY

    /** Every file the app copies out of the APK: manifest, golden vectors, model files, ORT-format model. */
    fun packageFiles(): List<String> =
        (listOf(FILE_NAME, golden.file) + model.files + listOfNotNull(ortModel?.file) + ortModel?.files.orEmpty())
            .distinct()

    /** The manifest's hash for [name] when it is the model or the ORT-format model, else null. */
    fun expectedSha256(name: String): String? = when (name) {
        model.file -> model.sha256
        ortModel?.file -> ortModel.sha256
        else -> null
    }

    companion object {
        const val FILE_NAME = "manifest.json"
        const val SCHEMA_VERSION = 1
        const val TASK_CLASSIFICATION = "classification"
        const val TASK_CAUSAL_LM = "causal-lm"
        const val EXTENSIONS_LIBRARY = "onnxruntime-extensions"

        private val SHA256_HEX = Regex("^[0-9a-f]{64}$")

        /** Parses manifest text; [source] names the file in error messages. */
        fun parse(text: String, source: String = FILE_NAME): PackageManifest {
            val root = JsonFields.parse(text, source)
            val schema = root.int("schema_version")
            if (schema != SCHEMA_VERSION) {
                throw JsonFormatException(
                    "$source: schema_version $schema is not supported by this app (it reads $SCHEMA_VERSION); " +
                        "rebuild the app or re-run edgetune package with a matching edgetune",
                )
            }
            val task = root.string("task")
            if (task != TASK_CLASSIFICATION && task != TASK_CAUSAL_LM) {
                throw JsonFormatException("$source: task \"$task\" is not one this app runs ($TASK_CLASSIFICATION, $TASK_CAUSAL_LM)")
            }
            val model = modelEntry(root.obj("model"), source, "model")
            val ortModel = root.optObj("ort_model")?.let { modelEntry(it, source, "ort_model") }
            val tok = root.obj("tokenizer")
            val labels = root.optStrings("labels").orEmpty()
            val goldenFields = root.obj("golden")
            val golden = GoldenRef(safeName(goldenFields.string("file"), source, "golden.file"), goldenFields.int("count"))
            val chat = root.optObj("chat")?.let {
                ChatSpec(
                    systemPrompt = it.optString("system_prompt").orEmpty(),
                    promptFormat = it.string("prompt_format"),
                    maxNewTokens = it.optInt("max_new_tokens") ?: DEFAULT_MAX_NEW_TOKENS,
                    adapters = it.optArray("adapters")?.let { _ ->
                        it.objects("adapters").map { a ->
                            ChatAdapter(
                                name = a.string("name"),
                                file = safeName(a.string("file"), source, "chat.adapters.file"),
                                systemPrompt = a.optString("system_prompt").orEmpty(),
                            )
                        }
                    }.orEmpty(),
                )
            }
            chat?.adapters?.forEach {
                if (it.file !in model.files) {
                    throw JsonFormatException("$source: chat.adapters: ${it.file} is not one of model.files")
                }
            }
            if (chat != null && chat.adapters.map { it.name }.toSet().size != chat.adapters.size) {
                throw JsonFormatException("$source: chat.adapters has duplicate names")
            }
            val manifest = PackageManifest(
                schemaVersion = schema,
                task = task,
                recipe = root.optString("recipe").orEmpty(),
                model = model,
                ortModel = ortModel,
                inputs = root.optArray("inputs")?.let { root.objects("inputs").map(::tensorSpec) }.orEmpty(),
                outputs = root.optArray("outputs")?.let { root.objects("outputs").map(::tensorSpec) }.orEmpty(),
                tokenizer = TokenizerSpec(
                    kind = tok.string("kind"),
                    op = tok.optString("op"),
                    library = tok.optString("library"),
                    maxLength = tok.optInt("max_length"),
                    file = tok.optString("file"),
                ),
                labels = labels,
                golden = golden,
                chat = chat,
                versions = root.scalars("versions"),
            )
            if (manifest.isClassification) {
                if (labels.isEmpty()) throw JsonFormatException("$source: labels is empty; a classifier needs its label names")
                if (labels.toSet().size != labels.size) throw JsonFormatException("$source: labels has duplicates")
                if (manifest.inputs.size != 1) {
                    throw JsonFormatException("$source: a classifier takes one input (a string tensor), not ${manifest.inputs.size}")
                }
                if (manifest.outputs.isEmpty()) throw JsonFormatException("$source: outputs is empty")
            } else if (chat == null) {
                throw JsonFormatException("$source: chat is missing; a causal-lm package needs its prompt format")
            }
            return manifest
        }

        const val DEFAULT_MAX_NEW_TOKENS = 64

        private fun modelEntry(f: JsonFields, source: String, path: String): ModelEntry {
            val file = safeName(f.string("file"), source, "$path.file")
            val sha = f.string("sha256").lowercase()
            if (!SHA256_HEX.matches(sha)) throw JsonFormatException("$source: $path.sha256 is not a SHA-256 hex digest")
            val files = (f.optStrings("files") ?: listOf(file)).map { safeName(it, source, "$path.files") }
            return ModelEntry(
                file = file,
                sha256 = sha,
                sizeBytes = f.optLong("size_bytes") ?: 0L,
                precision = f.optString("precision"),
                files = if (file in files) files else listOf(file) + files,
            )
        }

        private fun tensorSpec(f: JsonFields) = TensorSpec(
            name = f.string("name"),
            dtype = f.string("dtype"),
            shape = f.optArray("shape")?.let { f.longs("shape") }.orEmpty(),
        )

        /** A package file name must stay inside the package folder: relative, no "..", no empty parts. */
        internal fun safeName(name: String, source: String, field: String): String {
            val parts = name.split('/')
            if (name.isEmpty() || name.startsWith("/") || name.contains('\\') ||
                parts.any { it.isEmpty() || it == "." || it == ".." }
            ) {
                throw JsonFormatException("$source: $field \"$name\" must be a relative path inside the package")
            }
            return name
        }
    }
}
