package androidx.core.view;

import android.view.View;

/** Compile-only stand-in for androidx.core 1.17.0's ViewCompat: the one method the app calls. */
public class ViewCompat {
    private ViewCompat() {
    }

    public static void setOnApplyWindowInsetsListener(View v, OnApplyWindowInsetsListener listener) {
        throw new UnsupportedOperationException("compile-only stand-in");
    }
}
