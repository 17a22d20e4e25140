package androidx.core.view;

import android.view.View;

/** Compile-only stand-in for androidx.core 1.17.0's OnApplyWindowInsetsListener (its one method). */
public interface OnApplyWindowInsetsListener {
    WindowInsetsCompat onApplyWindowInsets(View v, WindowInsetsCompat insets);
}
