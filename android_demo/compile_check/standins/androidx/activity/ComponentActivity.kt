package androidx.activity

import android.app.Activity
import androidx.lifecycle.LifecycleOwner

/**
 * Compile-only stand-in for androidx.activity 1.10.1's ComponentActivity. The app uses only what it inherits
 * from android.app.Activity and that it is a LifecycleOwner (for lifecycleScope).
 */
open class ComponentActivity : Activity(), LifecycleOwner
