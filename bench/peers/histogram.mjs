// Latency histogram for the Socket.IO load client, kept the way ws-client's hdrhistogram keeps
// its own (microseconds, about three significant digits, a fixed array and no allocation per
// sample), so that percentiles on both sides of bench/run.sh --peers mean the same thing.
//
// Values below 2,048 µs are exact; above, each power of two is cut into 1,024 buckets (0.1%
// wide), up to 2^32 µs (over an hour). A percentile is the highest value of its bucket, as
// hdrhistogram's `value_at_percentile` gives.

const EXACT = 2048;
const SUB = 1024;
const MAX_US = 2 ** 32 - 1;

function bucketOf(us) {
  const v = Math.min(Math.max(Math.floor(us), 1), MAX_US);
  if (v < EXACT) return v;
  const shift = 31 - Math.clz32(v) - 10;
  const sub = Math.floor(v / 2 ** shift);
  return EXACT + (shift - 1) * SUB + (sub - SUB);
}

function highestOf(bucket) {
  if (bucket < EXACT) return bucket;
  const shift = Math.floor((bucket - EXACT) / SUB) + 1;
  const sub = ((bucket - EXACT) % SUB) + SUB;
  return (sub + 1) * 2 ** shift - 1;
}

export class Histogram {
  constructor() {
    this.counts = new Float64Array(bucketOf(MAX_US) + 1);
    this.samples = 0;
    this.sum = 0;
    this.max = 0;
  }

  record(us) {
    this.counts[bucketOf(us)] += 1;
    this.samples += 1;
    this.sum += us;
    if (us > this.max) this.max = us;
  }

  /** The value at `percentile` (0–100), in microseconds; 0 when empty. */
  valueAt(percentile) {
    if (this.samples === 0) return 0;
    const wanted = Math.max(1, Math.ceil((percentile / 100) * this.samples));
    let seen = 0;
    for (let bucket = 0; bucket < this.counts.length; bucket += 1) {
      seen += this.counts[bucket];
      if (seen >= wanted) return highestOf(bucket);
    }
    return this.max;
  }

  /** The summary ws-client writes as `latency_ms`. */
  summaryMs() {
    const ms = (us) => us / 1000;
    return {
      samples: this.samples,
      avg: this.samples ? ms(this.sum / this.samples) : 0,
      p50: ms(this.valueAt(50)),
      p90: ms(this.valueAt(90)),
      p99: ms(this.valueAt(99)),
      p999: ms(this.valueAt(99.9)),
      max: ms(this.max),
    };
  }
}
