package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class PackageManifestTest {

    @Test
    fun parsesAClassifierManifest() {
        val m = PackageManifest.parse(Fixtures.classifierManifest())
        assertTrue(m.isClassification)
        assertTrue(m.usesExtensions)
        assertEquals("intent-minilm", m.recipe)
        assertEquals("model.onnx", m.model.file)
        assertEquals(Fixtures.MODEL_SHA, m.model.sha256)
        assertEquals(23000000L, m.model.sizeBytes)
        assertEquals("model.ort", m.ortModel!!.file)
        assertEquals(listOf(TensorSpec("text", "string", listOf(1L))), m.inputs)
        assertEquals("logits", m.outputs.single().name)
        assertEquals(listOf("lights_on", "lights_off", "music_play"), m.labels)
        assertEquals(GoldenRef("golden.json", 2), m.golden)
        assertEquals(64, m.tokenizer.maxLength)
        assertEquals("17", m.versions["opset"])
        assertEquals("1.32.0", m.versions["onnxruntime"])
        assertNull(m.chat)
    }

    @Test
    fun listsEveryFileToCopy() {
        val m = PackageManifest.parse(Fixtures.classifierManifest())
        assertEquals(listOf("manifest.json", "golden.json", "model.onnx", "model.ort"), m.packageFiles())
        assertEquals(Fixtures.MODEL_SHA, m.expectedSha256("model.onnx"))
        assertEquals(Fixtures.ORT_SHA, m.expectedSha256("model.ort"))
        assertNull(m.expectedSha256("other.onnx"))
    }

    @Test
    fun ortModelMayBeNull() {
        val m = PackageManifest.parse(Fixtures.classifierManifest(ortModel = "null"))
        assertNull(m.ortModel)
        assertEquals(listOf("manifest.json", "golden.json", "model.onnx"), m.packageFiles())
    }

    @Test
    fun parsesAChatManifest() {
        val m = PackageManifest.parse(Fixtures.CHAT_MANIFEST)
        assertFalse(m.isClassification)
        assertFalse(m.usesExtensions)
        assertEquals(PackageManifest.TASK_CAUSAL_LM, m.task)
        assertEquals("You control a smart home.", m.chat!!.systemPrompt)
        assertTrue(m.chat.promptFormat.startsWith("<|im_start|>system\n{system}"))
        assertEquals(64, m.chat.maxNewTokens)
        assertEquals(
            listOf("manifest.json", "golden.json", "genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"),
            m.packageFiles(),
        )
    }

    @Test
    fun modelFileIsAlwaysAmongItsFiles() {
        val text = Fixtures.classifierManifest().replace("\"files\": [\"model.onnx\"]", "\"files\": [\"weights.data\"]")
        assertEquals(listOf("model.onnx", "weights.data"), PackageManifest.parse(text).model.files)
    }

    @Test
    fun missingFieldIsNamed() {
        val text = Fixtures.classifierManifest().replace("\"sha256\": \"${Fixtures.MODEL_SHA}\", ", "")
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse(text) }
        assertEquals("manifest.json: model.sha256 is missing", e.message)
    }

    @Test
    fun wrongSchemaVersionIsRejected() {
        val text = Fixtures.classifierManifest().replace("\"schema_version\": 1", "\"schema_version\": 2")
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse(text) }
        assertTrue(e.message!!.contains("schema_version 2 is not supported"))
    }

    @Test
    fun unknownTaskIsRejected() {
        val text = Fixtures.classifierManifest().replace("\"task\": \"classification\"", "\"task\": \"detection\"")
        assertThrows(JsonFormatException::class.java) { PackageManifest.parse(text) }
    }

    @Test
    fun classifierNeedsLabels() {
        val text = Fixtures.classifierManifest().replace("[\"lights_on\", \"lights_off\", \"music_play\"]", "[]")
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse(text) }
        assertTrue(e.message!!.contains("labels is empty"))
    }

    @Test
    fun badShaIsRejected() {
        val e = assertThrows(JsonFormatException::class.java) {
            PackageManifest.parse(Fixtures.classifierManifest(modelSha = "not-a-hash"))
        }
        assertEquals("manifest.json: model.sha256 is not a SHA-256 hex digest", e.message)
    }

    @Test
    fun filesMustStayInsideThePackage() {
        for (bad in listOf("../evil.onnx", "/data/evil.onnx", "a//b.onnx", "./model.onnx")) {
            val text = Fixtures.classifierManifest().replace("\"file\": \"model.onnx\"", "\"file\": \"$bad\"")
            assertThrows(bad, JsonFormatException::class.java) { PackageManifest.parse(text) }
        }
    }

    @Test
    fun notJsonIsAFormatError() {
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse("{not json", "assets/edgetune/manifest.json") }
        assertTrue(e.message!!.startsWith("assets/edgetune/manifest.json: not valid JSON"))
    }

    @Test
    fun parsesAChatManifestOfABaseWithAdapters() {
        val m = PackageManifest.parse(adapters("home.onnx_adapter"))
        assertEquals(
            listOf(ChatAdapter("home", "home.onnx_adapter", ""), ChatAdapter("timers", "timers.onnx_adapter", "Set timers.")),
            m.chat!!.adapters,
        )
        assertTrue(m.packageFiles().containsAll(listOf("home.onnx_adapter", "timers.onnx_adapter")))
        assertEquals(emptyList<ChatAdapter>(), PackageManifest.parse(Fixtures.CHAT_MANIFEST).chat!!.adapters)
    }

    @Test
    fun anAdapterFileOutsideTheModelsFilesIsRefused() {
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse(adapters("other.onnx_adapter")) }
        assertTrue(e.message!!, e.message!!.contains("chat.adapters: other.onnx_adapter is not one of model.files"))
    }

    /** The chat fixture as a base model with two adapters, the first one's file named [homeFile]. */
    private fun adapters(homeFile: String): String =
        Fixtures.CHAT_MANIFEST
            .replace("\"tokenizer_config.json\"]", "\"tokenizer_config.json\", \"home.onnx_adapter\", \"timers.onnx_adapter\"]")
            .replace(
                "\"max_new_tokens\": 64}",
                "\"max_new_tokens\": 64, \"adapters\": [{\"name\": \"home\", \"file\": \"$homeFile\"}, " +
                    "{\"name\": \"timers\", \"file\": \"timers.onnx_adapter\", \"system_prompt\": \"Set timers.\"}]}",
            )

    @Test
    fun chatPackageNeedsItsPromptFormat() {
        val text = Fixtures.CHAT_MANIFEST.replace("\"chat\":", "\"chat_unused\":")
        val e = assertThrows(JsonFormatException::class.java) { PackageManifest.parse(text) }
        assertTrue(e.message!!.contains("chat is missing"))
    }
}
