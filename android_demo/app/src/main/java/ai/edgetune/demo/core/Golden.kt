package ai.edgetune.demo.core

import kotlin.math.abs
import kotlin.math.sqrt

/** A classifier golden case: a text and the logits PyTorch computed for it. */
data class GoldenCase(
    val text: String,
    val pytorchLogits: List<Double>,
    val pytorchLabel: String,
    /** False when PyTorch's top two logits are too close for the label to be a fair check. */
    val checkLabel: Boolean,
)

/** `golden.json` of a classifier package, with the tolerances `edgetune package` derived from verify. */
data class ClassificationGolden(val maxAbsDiff: Double, val minCosine: Double, val cases: List<GoldenCase>) {
    companion object {
        fun parse(text: String, source: String = "golden.json"): ClassificationGolden {
            val root = JsonFields.parse(text, source)
            val cases = root.objects("cases").map {
                GoldenCase(
                    text = it.string("text"),
                    pytorchLogits = it.doubles("pytorch_logits"),
                    pytorchLabel = it.string("pytorch_label"),
                    checkLabel = it.boolean("check_label", default = true),
                )
            }
            return ClassificationGolden(root.double("max_abs_diff"), root.double("min_cosine"), cases)
        }
    }
}

/**
 * A causal-LM golden case: a user prompt and the text PyTorch generated greedily for it; with [adapter], the
 * package's adapter of that name was active (PyTorch: the base with that adapter merged).
 */
data class ChatGoldenCase(val prompt: String, val pytorchText: String, val adapter: String? = null)

data class ChatGolden(val cases: List<ChatGoldenCase>) {
    companion object {
        fun parse(text: String, source: String = "golden.json"): ChatGolden =
            ChatGolden(
                JsonFields.parse(text, source).objects("cases").map {
                    ChatGoldenCase(it.string("prompt"), it.string("pytorch_text"), it.optString("adapter"))
                },
            )
    }
}

/** How one on-device output compares with PyTorch's. */
data class GoldenCheck(
    val text: String,
    val maxAbsDiff: Double,
    val cosine: Double,
    val label: String,
    val expectedLabel: String,
    val labelChecked: Boolean,
    val passed: Boolean,
    /** Set when the outputs could not be compared at all (for example a different number of logits). */
    val problem: String? = null,
) {
    fun describe(golden: ClassificationGolden): String {
        val shown = if (text.length > 40) text.take(40) + "…" else text
        if (problem != null) return "golden '$shown': $problem"
        return "golden '$shown': max|diff| ${fmt(maxAbsDiff)} (<= ${golden.maxAbsDiff}), " +
            "cosine ${"%.6f".format(java.util.Locale.US, cosine)} (>= ${golden.minCosine}), " +
            "label $label (PyTorch $expectedLabel${if (labelChecked) "" else ", not checked"})"
    }

    private fun fmt(x: Double) = "%.4g".format(java.util.Locale.US, x)
}

/** The comparison `edgetune package` runs on the host, done the same way on the device. */
object GoldenComparator {

    fun maxAbsDiff(a: FloatArray, b: List<Double>): Double {
        require(a.size == b.size) { "length ${a.size} vs ${b.size}" }
        var worst = 0.0
        for (i in a.indices) worst = maxOf(worst, abs(a[i].toDouble() - b[i]))
        return worst
    }

    /** Cosine similarity, with the same 1e-12 guard in the denominator as the Python side. */
    fun cosine(a: FloatArray, b: List<Double>): Double {
        require(a.size == b.size) { "length ${a.size} vs ${b.size}" }
        var dot = 0.0
        var na = 0.0
        var nb = 0.0
        for (i in a.indices) {
            val x = a[i].toDouble()
            val y = b[i]
            dot += x * y
            na += x * x
            nb += y * y
        }
        return dot / (sqrt(na) * sqrt(nb) + 1e-12)
    }

    /**
     * A case passes when max |logits - pytorch_logits| <= max_abs_diff, cosine >= min_cosine and, when the case
     * says so, the arg-max label equals PyTorch's.
     */
    fun check(case: GoldenCase, logits: FloatArray, labels: List<String>, golden: ClassificationGolden): GoldenCheck {
        if (logits.size != case.pytorchLogits.size || logits.size != labels.size) {
            return GoldenCheck(
                text = case.text, maxAbsDiff = Double.NaN, cosine = Double.NaN, label = "", expectedLabel = case.pytorchLabel,
                labelChecked = case.checkLabel, passed = false,
                problem = "the model returned ${logits.size} logits; golden.json has ${case.pytorchLogits.size} " +
                    "and the manifest ${labels.size} labels",
            )
        }
        val diff = maxAbsDiff(logits, case.pytorchLogits)
        val cos = cosine(logits, case.pytorchLogits)
        val label = labels[Scores.argmax(logits)]
        val passed = diff <= golden.maxAbsDiff && cos >= golden.minCosine && (!case.checkLabel || label == case.pytorchLabel)
        return GoldenCheck(case.text, diff, cos, label, case.pytorchLabel, case.checkLabel, passed)
    }
}
