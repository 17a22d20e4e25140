package ai.edgetune.demo.core

import kotlin.math.exp

/** A label with its softmax probability and the raw logit it came from. */
data class LabelProbability(val label: String, val probability: Double, val logit: Float)

/** Turning a classifier's logits into what the main screen shows. */
object Scores {

    /** Softmax in double precision, shifted by the largest logit so large logits cannot overflow. */
    fun softmax(logits: FloatArray): DoubleArray {
        if (logits.isEmpty()) return DoubleArray(0)
        require(logits.all { it.isFinite() }) { "logits must be finite: ${logits.joinToString()}" }
        val top = logits.maxOrNull()!!.toDouble()
        val e = DoubleArray(logits.size) { exp(logits[it] - top) }
        val sum = e.sum()
        return DoubleArray(e.size) { e[it] / sum }
    }

    /** Index of the largest value; the first one on ties, as numpy.argmax. */
    fun argmax(values: FloatArray): Int {
        require(values.isNotEmpty()) { "argmax of an empty array" }
        var best = 0
        for (i in 1 until values.size) if (values[i] > values[best]) best = i
        return best
    }

    /** Every label with its probability, most probable first (ties keep the manifest's label order). */
    fun ranked(labels: List<String>, logits: FloatArray): List<LabelProbability> {
        require(labels.size == logits.size) {
            "the model returned ${logits.size} logits but the manifest has ${labels.size} labels"
        }
        val p = softmax(logits)
        return labels.indices
            .sortedWith(compareByDescending<Int> { p[it] }.thenBy { it })
            .map { LabelProbability(labels[it], p[it], logits[it]) }
    }
}
