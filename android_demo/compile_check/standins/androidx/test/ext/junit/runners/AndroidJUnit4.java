package androidx.test.ext.junit.runners;

import org.junit.runner.Description;
import org.junit.runner.Runner;
import org.junit.runner.notification.RunNotifier;

/**
 * Compile-only stand-in for androidx.test.ext:junit 1.3.0's AndroidJUnit4: a JUnit Runner, so that
 * {@code @RunWith(AndroidJUnit4::class)} type-checks. The two methods are Runner's abstract ones.
 */
public final class AndroidJUnit4 extends Runner {
    public AndroidJUnit4(Class<?> klass) {
        throw new UnsupportedOperationException("compile-only stand-in");
    }

    @Override
    public Description getDescription() {
        throw new UnsupportedOperationException("compile-only stand-in");
    }

    @Override
    public void run(RunNotifier notifier) {
        throw new UnsupportedOperationException("compile-only stand-in");
    }
}
