package androidx.test.platform.app;

import android.app.Instrumentation;

/** Compile-only stand-in for androidx.test:monitor's InstrumentationRegistry: the one method the tests call. */
public final class InstrumentationRegistry {
    private InstrumentationRegistry() {
    }

    public static Instrumentation getInstrumentation() {
        throw new UnsupportedOperationException("compile-only stand-in");
    }
}
