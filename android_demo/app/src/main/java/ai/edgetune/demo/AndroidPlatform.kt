package ai.edgetune.demo

import ai.edgetune.demo.core.AssetSource
import ai.edgetune.demo.core.DeviceInfo
import ai.edgetune.demo.core.PackageInstaller
import android.app.Activity
import android.content.Context
import android.content.res.AssetManager
import android.os.Build
import android.view.View
import android.widget.Button
import android.widget.EditText
import androidx.core.view.ViewCompat
import androidx.core.view.WindowInsetsCompat
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import java.io.FileNotFoundException
import java.io.InputStream

/** The APK's assets as an [AssetSource]. */
class AndroidAssetSource(private val assets: AssetManager) : AssetSource {
    override fun openOrNull(path: String): InputStream? =
        try {
            assets.open(path, AssetManager.ACCESS_STREAMING)
        } catch (e: FileNotFoundException) {
            null
        }
}

/** The installer every screen and test uses: assets of this APK into this app's filesDir. */
fun packageInstaller(context: Context): PackageInstaller =
    PackageInstaller(AndroidAssetSource(context.assets), context.filesDir)

/** ABIs the APK ships native libraries for (the abiFilters in app/build.gradle.kts). */
val PACKAGED_ABIS = listOf("arm64-v8a", "x86_64")

fun deviceInfo(): DeviceInfo = DeviceInfo(
    manufacturer = Build.MANUFACTURER.orEmpty(),
    model = Build.MODEL.orEmpty(),
    androidVersion = Build.VERSION.RELEASE.orEmpty(),
    sdkInt = Build.VERSION.SDK_INT,
    abi = DeviceInfo.selectAbi(Build.SUPPORTED_ABIS.toList(), PACKAGED_ABIS),
)

/**
 * The view [id] of this activity's layout as a [T]: what the generic findViewById<T> of API 26 and later
 * does, written as a checked cast so that it also compiles against the API 23 platform jar of
 * compile_check.sh, where findViewById returns a plain View.
 */
inline fun <reified T : View> Activity.viewById(id: Int): T {
    val view: View = findViewById(id)
    return view as T
}

/** Pads [root] by the system bars and the keyboard: with targetSdk 35+ the app draws edge to edge. */
fun applySystemBarInsets(root: View) {
    val left = root.paddingLeft
    val top = root.paddingTop
    val right = root.paddingRight
    val bottom = root.paddingBottom
    ViewCompat.setOnApplyWindowInsetsListener(root) { view, insets ->
        val bars = insets.getInsets(WindowInsetsCompat.Type.systemBars() or WindowInsetsCompat.Type.ime())
        view.setPadding(left + bars.left, top + bars.top, right + bars.right, bottom + bars.bottom)
        WindowInsetsCompat.CONSUMED
    }
}

/** [action] runs on a tap of [button], and on the keyboard's [imeAction] key in [field] while [button] is enabled. */
fun bindAction(button: Button, field: EditText, imeAction: Int, action: () -> Unit) {
    button.setOnClickListener { action() }
    field.setOnEditorActionListener { _, actionId, _ ->
        if (actionId == imeAction && button.isEnabled) {
            action()
            true
        } else {
            false
        }
    }
}

/** Work that must finish even when the screen that started it is gone, such as closing a session. */
object AppScope {
    val scope: CoroutineScope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
}
