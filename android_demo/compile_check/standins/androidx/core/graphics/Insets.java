package androidx.core.graphics;

/** Compile-only stand-in for androidx.core 1.17.0's Insets: the four fields the app reads. */
public final class Insets {
    public final int left;
    public final int top;
    public final int right;
    public final int bottom;

    private Insets(int left, int top, int right, int bottom) {
        this.left = left;
        this.top = top;
        this.right = right;
        this.bottom = bottom;
    }
}
