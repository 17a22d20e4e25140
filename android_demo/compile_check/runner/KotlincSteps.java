import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.jetbrains.kotlin.cli.common.ExitCode;
import org.jetbrains.kotlin.cli.jvm.K2JVMCompiler;

/**
 * Runs several kotlinc compilations one after the other in this one JVM, which saves the compiler's start-up
 * and warm-up for each of them. Arguments: groups separated by "---", each a label followed by ordinary
 * kotlinc arguments. Stops at the first group that does not compile (exit status 1).
 *
 * Usage: java -cp RUNNER_DIR:kotlin-compiler.jar KotlincSteps LABEL ARGS... --- LABEL ARGS...
 */
public final class KotlincSteps {
    private KotlincSteps() {
    }

    public static void main(String[] args) {
        List<List<String>> groups = new ArrayList<>();
        List<String> current = new ArrayList<>();
        for (String a : args) {
            if (a.equals("---")) {
                groups.add(current);
                current = new ArrayList<>();
            } else {
                current.add(a);
            }
        }
        groups.add(current);
        for (List<String> group : groups) {
            String label = group.get(0);
            List<String> kotlincArgs = group.subList(1, group.size());
            long start = System.nanoTime();
            ExitCode code = new K2JVMCompiler().exec(System.err, kotlincArgs.toArray(new String[0]));
            long ms = (System.nanoTime() - start) / 1_000_000;
            if (code != ExitCode.OK) {
                System.err.println("kotlinc: " + label + " does not compile (" + code + ")");
                System.exit(1);
            }
            System.out.println("  kotlinc " + label + ": ok (" + ms + " ms)");
        }
    }
}
