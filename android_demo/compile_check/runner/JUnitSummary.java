import java.io.File;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.junit.Test;
import org.junit.runner.JUnitCore;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;

/**
 * Runs every JUnit 4 test class found under a folder of compiled classes (a public class with an @Test
 * method) and ends with one line "N passed, N failed, N skipped". Exit status 1 when a test failed or none ran.
 *
 * Usage: java -cp CLASSPATH JUnitSummary CLASSES_DIR
 */
public final class JUnitSummary {
    private JUnitSummary() {
    }

    public static void main(String[] args) throws Exception {
        File root = new File(args[0]);
        List<String> names = new ArrayList<>();
        collect(root, "", names);
        Collections.sort(names);
        List<Class<?>> classes = new ArrayList<>();
        for (String name : names) {
            Class<?> c = Class.forName(name, false, JUnitSummary.class.getClassLoader());
            if (Modifier.isPublic(c.getModifiers()) && !Modifier.isAbstract(c.getModifiers()) && hasTests(c)) {
                classes.add(c);
            }
        }
        Result result = new JUnitCore().run(classes.toArray(new Class<?>[0]));
        for (Failure f : result.getFailures()) {
            System.out.println("FAILED " + f.getTestHeader() + ": " + f.getMessage());
            // The frames of the app and its tests, not JUnit's or the JDK's reflection.
            for (String line : f.getTrace().split("\n")) {
                String t = line.trim();
                if (t.startsWith("at ") && !t.startsWith("at org.junit.") && !t.startsWith("at java.")
                        && !t.startsWith("at jdk.") && !t.startsWith("at sun.") && !t.startsWith("at JUnitSummary.")) {
                    System.out.println("    " + t);
                }
            }
        }
        int failed = result.getFailureCount();
        int assumed = result.getAssumptionFailureCount();
        int passed = result.getRunCount() - failed - assumed;
        int skipped = result.getIgnoreCount() + assumed;
        System.out.println(classes.size() + " test classes, " + result.getRunTime() + " ms");
        System.out.println(passed + " passed, " + failed + " failed" + (skipped > 0 ? ", " + skipped + " skipped" : ""));
        System.exit(failed == 0 && passed > 0 ? 0 : 1);
    }

    private static void collect(File dir, String pkg, List<String> out) {
        File[] entries = dir.listFiles();
        if (entries == null) return;
        for (File f : entries) {
            String n = f.getName();
            if (f.isDirectory()) {
                collect(f, pkg + n + ".", out);
            } else if (n.endsWith(".class") && !n.contains("$")) {
                out.add(pkg + n.substring(0, n.length() - ".class".length()));
            }
        }
    }

    private static boolean hasTests(Class<?> c) {
        for (Method m : c.getMethods()) {
            if (m.isAnnotationPresent(Test.class)) return true;
        }
        return false;
    }
}
