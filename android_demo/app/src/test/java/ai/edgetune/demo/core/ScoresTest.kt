package ai.edgetune.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class ScoresTest {

    @Test
    fun softmaxMatchesNumpy() {
        // numpy: e = exp(l - l.max()); e / e.sum() for l = [1, -2, 0.5]
        val p = Scores.softmax(floatArrayOf(1f, -2f, 0.5f))
        assertArrayEquals(doubleArrayOf(0.6037488961486258, 0.030058887569574023, 0.3661922162818002), p, 1e-12)
        assertEquals(1.0, p.sum(), 1e-12)
    }

    @Test
    fun softmaxDoesNotOverflowOnLargeLogits() {
        val p = Scores.softmax(floatArrayOf(1000f, 1000f, -1000f))
        assertArrayEquals(doubleArrayOf(0.5, 0.5, 0.0), p, 1e-12)
    }

    @Test
    fun softmaxOfNothingIsNothing() {
        assertEquals(0, Scores.softmax(FloatArray(0)).size)
    }

    @Test
    fun softmaxRejectsNaN() {
        assertThrows(IllegalArgumentException::class.java) { Scores.softmax(floatArrayOf(1f, Float.NaN)) }
    }

    @Test
    fun argmaxTakesTheFirstOfEqualValues() {
        assertEquals(1, Scores.argmax(floatArrayOf(0f, 3f, 3f, -1f)))
    }

    @Test
    fun rankedListsEveryLabelMostProbableFirst() {
        val ranked = Scores.ranked(listOf("lights_on", "lights_off", "music_play"), floatArrayOf(0.5f, 2f, -1f))
        assertEquals(listOf("lights_off", "lights_on", "music_play"), ranked.map { it.label })
        assertEquals(1.0, ranked.sumOf { it.probability }, 1e-12)
        assertEquals(2f, ranked.first().logit)
    }

    @Test
    fun rankedKeepsManifestOrderOnTies() {
        val ranked = Scores.ranked(listOf("a", "b", "c"), floatArrayOf(1f, 1f, 1f))
        assertEquals(listOf("a", "b", "c"), ranked.map { it.label })
    }

    @Test
    fun rankedRejectsALabelCountMismatch() {
        val e = assertThrows(IllegalArgumentException::class.java) {
            Scores.ranked(listOf("a", "b"), floatArrayOf(1f, 2f, 3f))
        }
        assertEquals("the model returned 3 logits but the manifest has 2 labels", e.message)
    }
}
