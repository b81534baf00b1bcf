// Run an async job at most once at a time, and not more often than every few times as
// long as it takes (at least `minimum` ms): requests that arrive meanwhile are folded
// into one run after it.

export class Throttle {
  private running = false;
  private pending = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private last = -Infinity;
  private took = 0;
  private stopped = false;
  private urgent = false; // a now() came while running

  constructor(
    private readonly job: () => Promise<void>,
    private readonly minimum = 400,
  ) {}

  request(): void {
    if (this.stopped) return;
    if (this.running || this.timer) {
      this.pending = true;
      return;
    }
    const wait = this.last + Math.max(this.minimum, 3 * this.took) - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.run();
      }, wait);
    } else {
      void this.run();
    }
  }

  /** Run as soon as the current run (if any) ends: for what the user just asked. */
  now(): void {
    if (this.stopped) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.running) this.pending = this.urgent = true;
    else void this.run();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async run(): Promise<void> {
    this.running = true;
    this.pending = this.urgent = false;
    const started = performance.now();
    try {
      await this.job();
    } finally {
      this.running = false;
      this.last = performance.now();
      this.took = this.last - started;
      if (this.urgent && !this.stopped) void this.run();
      else if (this.pending) this.request();
    }
  }
}
