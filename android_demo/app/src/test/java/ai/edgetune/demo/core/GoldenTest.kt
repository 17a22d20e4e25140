package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class GoldenTest {

    private val labels = listOf("lights_on", "lights_off", "music_play")
    private val golden = ClassificationGolden.parse(Fixtures.GOLDEN)

    @Test
    fun parsesClassificationGolden() {
        assertEquals(0.5, golden.maxAbsDiff, 0.0)
        assertEquals(0.99, golden.minCosine, 0.0)
        assertEquals(2, golden.cases.size)
        assertEquals(GoldenCase("turn on the kitchen lights", listOf(3.0, -2.0, 0.25), "lights_on", true), golden.cases[0])
        assertFalse(golden.cases[1].checkLabel)
    }

    @Test
    fun parsesChatGolden() {
        val g = ChatGolden.parse(Fixtures.CHAT_GOLDEN)
        assertEquals(listOf(ChatGoldenCase("dim the kitchen lights to 30", "{\"action\": \"dim\"}")), g.cases)
        val withAdapter = ChatGolden.parse(Fixtures.CHAT_GOLDEN.replace("\"prompt\":", "\"adapter\": \"home\", \"prompt\":"))
        assertEquals("home", withAdapter.cases.single().adapter)
    }

    @Test
    fun maxAbsDiffAndCosineMatchThePythonFormulas() {
        val a = floatArrayOf(1f, 2f, 3f)
        val b = listOf(1.5, 2.0, 2.0)
        assertEquals(1.0, GoldenComparator.maxAbsDiff(a, b), 1e-12)
        // numpy: a @ b / (norm(a) * norm(b) + 1e-12)
        assertEquals(11.5 / (Math.sqrt(14.0) * Math.sqrt(10.25) + 1e-12), GoldenComparator.cosine(a, b), 1e-12)
    }

    @Test
    fun closeLogitsPass() {
        val check = GoldenComparator.check(golden.cases[0], floatArrayOf(3.2f, -1.9f, 0.3f), labels, golden)
        assertTrue(check.describe(golden), check.passed)
        assertEquals("lights_on", check.label)
        assertEquals(0.2, check.maxAbsDiff, 1e-6)
    }

    @Test
    fun largeDifferenceFails() {
        val check = GoldenComparator.check(golden.cases[0], floatArrayOf(3.6f, -2f, 0.25f), labels, golden)
        assertFalse(check.passed)
        assertTrue(check.describe(golden).contains("max|diff| 0.6"))
    }

    @Test
    fun wrongLabelFailsOnlyWhenChecked() {
        // Same direction (cosine ~1) and small difference, but the top label flips.
        val flipped = floatArrayOf(0.1f, 0.19f, 0.2f)
        val unchecked = GoldenComparator.check(golden.cases[1], flipped, labels, golden)
        assertEquals("music_play", unchecked.label)
        assertTrue(unchecked.describe(golden), unchecked.passed)
        val checked = GoldenComparator.check(golden.cases[1].copy(checkLabel = true), flipped, labels, golden)
        assertFalse(checked.passed)
    }

    @Test
    fun lowCosineFails() {
        val g = golden.copy(maxAbsDiff = 10.0)
        val check = GoldenComparator.check(golden.cases[0], floatArrayOf(3f, 2f, 0.25f), labels, g)
        assertTrue(check.cosine < 0.99)
        assertFalse(check.passed)
    }

    @Test
    fun wrongLengthFailsWithAReason() {
        val check = GoldenComparator.check(golden.cases[0], floatArrayOf(1f, 2f), labels, golden)
        assertFalse(check.passed)
        assertTrue(check.describe(golden).contains("the model returned 2 logits"))
    }

    @Test
    fun nanFails() {
        val check = GoldenComparator.check(golden.cases[0], floatArrayOf(Float.NaN, -2f, 0.25f), labels, golden)
        assertFalse(check.passed)
    }

    @Test
    fun missingToleranceIsNamed() {
        val e = assertThrows(JsonFormatException::class.java) { ClassificationGolden.parse("""{"min_cosine": 0.9, "cases": []}""") }
        assertEquals("golden.json: max_abs_diff is missing", e.message)
    }

    @Test
    fun nonNumericLogitIsNamed() {
        val text = Fixtures.GOLDEN.replace("[3.0, -2.0, 0.25]", "[3.0, \"x\", 0.25]")
        val e = assertThrows(JsonFormatException::class.java) { ClassificationGolden.parse(text) }
        assertTrue(e.message!!, e.message!!.startsWith("golden.json: cases[0].pytorch_logits[1] must be a finite number"))
    }
}
