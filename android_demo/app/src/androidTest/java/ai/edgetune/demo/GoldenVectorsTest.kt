package ai.edgetune.demo

import ai.edgetune.demo.core.ClassificationGolden
import ai.edgetune.demo.core.GoldenComparator
import ai.edgetune.demo.core.InstalledPackage
import ai.edgetune.demo.core.PackageInstaller
import ai.edgetune.demo.core.SessionSettings
import ai.edgetune.demo.runtime.IntentClassifier
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File

/**
 * The packaged classifier, copied out of the APK and opened exactly as the app does, reproduces every golden
 * case PyTorch computed on the host (max |diff|, cosine, label), with the default settings, with XNNPACK, and
 * in its ORT-format copy when the package has one.
 */
@RunWith(AndroidJUnit4::class)
class GoldenVectorsTest {

    private val context = InstrumentationRegistry.getInstrumentation().targetContext

    private fun installed(): InstalledPackage = packageInstaller(context).installClassifier()

    @Test
    fun everyGoldenCaseMatches() {
        val pkg = installed()
        checkEveryCase(pkg, pkg.modelFile, SessionSettings(threads = 2, xnnpack = false))
    }

    @Test
    fun everyGoldenCaseMatchesWithXnnpack() {
        val pkg = installed()
        checkEveryCase(pkg, pkg.modelFile, SessionSettings(threads = 2, xnnpack = true))
    }

    @Test
    fun everyGoldenCaseMatchesOnOneThread() {
        val pkg = installed()
        checkEveryCase(pkg, pkg.modelFile, SessionSettings(threads = 1, xnnpack = false))
    }

    @Test
    fun everyGoldenCaseMatchesInOrtFormat() {
        val pkg = installed()
        val ort = pkg.manifest.ortModel
        assumeTrue("the package has no ORT-format model", ort != null)
        val file = pkg.file(ort!!.file)
        PackageInstaller.verify(file, ort.sha256)
        checkEveryCase(pkg, file, SessionSettings(threads = 2, xnnpack = false))
    }

    private fun checkEveryCase(pkg: InstalledPackage, model: File, settings: SessionSettings) {
        val manifest = pkg.manifest
        val golden = ClassificationGolden.parse(pkg.file(manifest.golden.file).readText())
        assertTrue("golden.json has no cases", golden.cases.isNotEmpty())
        assertEquals("golden.json case count vs manifest.json golden.count", manifest.golden.count, golden.cases.size)
        IntentClassifier.open(model, manifest, settings).use { classifier ->
            val checks = golden.cases.map { case ->
                GoldenComparator.check(case, classifier.logits(case.text), manifest.labels, golden)
            }
            val failures = checks.filterNot { it.passed }
            assertTrue(
                "${model.name} (${settings.describe()}): ${failures.size} of ${checks.size} golden cases failed:\n" +
                    failures.joinToString("\n") { it.describe(golden) },
                failures.isEmpty(),
            )
        }
    }
}
