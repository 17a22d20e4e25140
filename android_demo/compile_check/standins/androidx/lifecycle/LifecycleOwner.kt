package androidx.lifecycle

import kotlinx.coroutines.CoroutineScope

/**
 * Compile-only stand-ins for androidx.lifecycle 2.9.4: LifecycleOwner (the app uses none of its members),
 * LifecycleCoroutineScope (a CoroutineScope) and the lifecycleScope extension property.
 */
interface LifecycleOwner

abstract class LifecycleCoroutineScope internal constructor() : CoroutineScope

val LifecycleOwner.lifecycleScope: LifecycleCoroutineScope
    get() = throw UnsupportedOperationException("compile-only stand-in")
