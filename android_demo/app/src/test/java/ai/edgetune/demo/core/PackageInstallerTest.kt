package ai.edgetune.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

class PackageInstallerTest {

    @get:Rule
    val tmp = TemporaryFolder()

    private val modelBytes = ByteArray(100_000) { (it * 7).toByte() }
    private val ortBytes = "ort".toByteArray()

    /** An APK's assets, backed by a folder; counts opens to tell a copy from a no-op. */
    private class FolderAssets(private val root: File) : AssetSource {
        var opens = 0
        override fun openOrNull(path: String) = File(root, path).takeIf { it.isFile }?.also { opens++ }?.inputStream()
    }

    private fun assets(modelSha: String = Sha256.hex(modelBytes)): Pair<File, FolderAssets> {
        val root = tmp.newFolder("assets")
        val dir = File(root, "edgetune").apply { mkdirs() }
        File(dir, "manifest.json").writeText(
            Fixtures.classifierManifest(
                modelSha = modelSha,
                ortModel = """{"file": "model.ort", "sha256": "${Sha256.hex(ortBytes)}", "size_bytes": 3, "files": ["model.ort"]}""",
            ),
        )
        File(dir, "golden.json").writeText(Fixtures.GOLDEN)
        File(dir, "model.onnx").writeBytes(modelBytes)
        File(dir, "model.ort").writeBytes(ortBytes)
        return root to FolderAssets(root)
    }

    @Test
    fun copiesEveryListedFileAndVerifiesTheModel() {
        val (_, source) = assets()
        val filesDir = tmp.newFolder("files")
        var lastProgress = 0L
        val installed = PackageInstaller(source, filesDir).installClassifier { copied, _ -> lastProgress = copied }
        assertEquals(File(filesDir, "edgetune"), installed.dir)
        assertEquals(File(filesDir, "edgetune/model.onnx"), installed.modelFile)
        assertArrayEquals(modelBytes, installed.modelFile.readBytes())
        for (name in listOf("manifest.json", "golden.json", "model.ort")) assertTrue(name, File(filesDir, "edgetune/$name").isFile)
        assertTrue(File(filesDir, "edgetune").list()!!.none { it.endsWith(".tmp") })
        assertEquals(modelBytes.size.toLong() + Fixtures.GOLDEN.toByteArray().size + ortBytes.size, lastProgress)
        assertEquals("intent-minilm", installed.manifest.recipe)
    }

    @Test
    fun secondInstallDoesNotCopyAgain() {
        val (_, source) = assets()
        val filesDir = tmp.newFolder("files")
        PackageInstaller(source, filesDir).installClassifier()
        val opensAfterFirst = source.opens
        PackageInstaller(source, filesDir).installClassifier()
        assertEquals("only the manifest is read again", opensAfterFirst + 1, source.opens)
    }

    @Test
    fun changedManifestCopiesAgain() {
        val (root, source) = assets()
        val filesDir = tmp.newFolder("files")
        PackageInstaller(source, filesDir).installClassifier()
        val newModel = ByteArray(10) { 1 }
        File(root, "edgetune/model.onnx").writeBytes(newModel)
        val manifest = File(root, "edgetune/manifest.json")
        manifest.writeText(manifest.readText().replace(Sha256.hex(modelBytes), Sha256.hex(newModel)))
        val installed = PackageInstaller(source, filesDir).installClassifier()
        assertArrayEquals(newModel, installed.modelFile.readBytes())
    }

    @Test
    fun hashMismatchIsAStaleOrCorruptPackage() {
        val (_, source) = assets(modelSha = "b".repeat(64))
        val filesDir = tmp.newFolder("files")
        val e = assertThrows(PackageException::class.java) { PackageInstaller(source, filesDir).installClassifier() }
        assertTrue(e.message!!, e.message!!.startsWith("stale or corrupt package: model.onnx has SHA-256"))
        assertFalse("a failed check forces a fresh copy next time", File(filesDir, "edgetune/manifest.json").exists())
    }

    @Test
    fun corruptedCopyIsDetected() {
        val (_, source) = assets()
        val filesDir = tmp.newFolder("files")
        val installed = PackageInstaller(source, filesDir).installClassifier()
        installed.modelFile.writeBytes(byteArrayOf(1, 2, 3))
        assertThrows(PackageException::class.java) { PackageInstaller(source, filesDir).installClassifier() }
        // The next start copies again and succeeds.
        assertArrayEquals(modelBytes, PackageInstaller(source, filesDir).installClassifier().modelFile.readBytes())
    }

    @Test
    fun noPackageSaysHowToMakeOne() {
        val e = assertThrows(NoPackageException::class.java) {
            PackageInstaller(AssetSource { null }, tmp.newFolder("files")).installClassifier()
        }
        assertEquals("No model packaged: run edgetune build recipes/intent-minilm.yaml", e.message)
        val chat = assertThrows(NoPackageException::class.java) {
            PackageInstaller(AssetSource { null }, tmp.newFolder("files2")).installChat()
        }
        assertEquals(PackageInstaller.NO_CHAT, chat.message)
    }

    @Test
    fun missingListedFileIsNamed() {
        val (root, source) = assets()
        File(root, "edgetune/model.ort").delete()
        val e = assertThrows(PackageException::class.java) { PackageInstaller(source, tmp.newFolder("files")).installClassifier() }
        assertEquals("assets/edgetune/model.ort is missing but manifest.json lists it: re-run edgetune package", e.message)
    }

    @Test
    fun chatPackageGoesToItsOwnFolderAndKeepsTheClassifier() {
        val (root, source) = assets()
        val llm = File(root, "edgetune/llm").apply { mkdirs() }
        val weights = ByteArray(5000) { 3 }
        val graph = "graph".toByteArray()
        File(llm, "manifest.json").writeText(Fixtures.CHAT_MANIFEST.replace(Fixtures.MODEL_SHA, Sha256.hex(graph)))
        File(llm, "golden.json").writeText(Fixtures.CHAT_GOLDEN)
        File(llm, "model.onnx").writeBytes(graph)
        File(llm, "model.onnx.data").writeBytes(weights)
        for (name in listOf("genai_config.json", "tokenizer.json", "tokenizer_config.json")) File(llm, name).writeText("{}")
        val filesDir = tmp.newFolder("files")
        val installer = PackageInstaller(source, filesDir)
        installer.installClassifier()
        val chat = installer.installChat()
        assertEquals(File(filesDir, "edgetune/llm"), chat.dir)
        assertArrayEquals(weights, File(chat.dir, "model.onnx.data").readBytes())
        assertTrue(File(filesDir, "edgetune/model.onnx").isFile)
        assertEquals("You control a smart home.", chat.manifest.chat!!.systemPrompt)
    }

    @Test
    fun wrongTaskIsRejected() {
        val (root, source) = assets()
        File(root, "edgetune/llm").mkdirs()
        File(root, "edgetune/manifest.json").copyTo(File(root, "edgetune/llm/manifest.json"))
        val e = assertThrows(PackageException::class.java) { PackageInstaller(source, tmp.newFolder("files")).installChat() }
        assertEquals("assets/edgetune/llm/manifest.json is a classification package; this screen needs causal-lm", e.message)
    }

    @Test
    fun atomicWriteLeavesNoTemporaryFile() {
        val target = File(tmp.newFolder("benchmark"), "result.json")
        AtomicFiles.writeText(target, "{\"a\": 1}\n")
        AtomicFiles.writeText(target, "{\"a\": 2}\n")
        assertEquals("{\"a\": 2}\n", target.readText())
        assertFalse(AtomicFiles.tmpFor(target).exists())
        assertEquals("result.json.tmp", AtomicFiles.tmpFor(target).name)
    }
}
