package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

class Sha256Test {

    @get:Rule
    val tmp = TemporaryFolder()

    @Test
    fun knownDigests() {
        // hashlib.sha256(b"").hexdigest(), hashlib.sha256(b"edgetune").hexdigest()
        assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Sha256.hex(ByteArray(0)))
        assertEquals("09ba328491c41347c32ec07a34adf9c8d0ed6a8eec8611c0cbcc8a51adf59063", Sha256.hex("edgetune".toByteArray()))
    }

    @Test
    fun fileAndStreamLongerThanTheBufferAgree() {
        // hashlib.sha256(bytes(range(256)) * 1000).hexdigest(): 256,000 bytes, several buffer fills
        val data = ByteArray(256 * 1000) { (it % 256).toByte() }
        val expected = "b57b64b198d5d59ce5a22a9b9f25e72a7d081476d432051aa923f3dbebb90934"
        val file = tmp.newFile("model.onnx").apply { writeBytes(data) }
        assertEquals(expected, Sha256.hex(file))
        assertEquals(expected, data.inputStream().use { Sha256.hex(it) })
        assertEquals(expected, Sha256.hex(data))
    }
}
