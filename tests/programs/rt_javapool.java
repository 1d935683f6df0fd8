// The holder: a JVM with a fixed pool of N threads (argument 1, 300 by
// default) whose tasks block forever. It prints "ready" once every pool
// thread is running, then stays alive until killed. It never fails itself:
// another process of the same user does, for want of the threads it holds.
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

public class rt_javapool {
    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 300;
        ExecutorService pool = Executors.newFixedThreadPool(n);
        CountDownLatch started = new CountDownLatch(n);
        for (int i = 0; i < n; i++) {
            pool.submit(() -> {
                started.countDown();
                try {
                    Thread.sleep(Long.MAX_VALUE);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
        }
        started.await();
        System.out.println("pid=" + ProcessHandle.current().pid());
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
