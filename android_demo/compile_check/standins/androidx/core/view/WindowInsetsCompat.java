package androidx.core.view;

import androidx.core.graphics.Insets;

/** Compile-only stand-in for androidx.core 1.17.0's WindowInsetsCompat: CONSUMED, getInsets and two Type masks. */
public class WindowInsetsCompat {
    public static final WindowInsetsCompat CONSUMED = null;

    private WindowInsetsCompat() {
    }

    public Insets getInsets(int typeMask) {
        throw new UnsupportedOperationException("compile-only stand-in");
    }

    public static final class Type {
        private Type() {
        }

        public static int ime() {
            throw new UnsupportedOperationException("compile-only stand-in");
        }

        public static int systemBars() {
            throw new UnsupportedOperationException("compile-only stand-in");
        }
    }
}
