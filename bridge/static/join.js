// uPlot wants one x column shared by every line ([xs, ys0, ys1, ...], a null where a line has
// no value at that x); our lines each have their own timestamps ([[ms, value], ...] sorted by
// time). Joining 6 lines x 900 readings from scratch costs about a millisecond, as much as
// uPlot's whole redraw, and the live charts redraw several times a second while only a few
// readings changed. So the Join keeps its table between redraws and applies only what changed:
// readings appended at the end of a line (a new row, or the cell of an existing x) and readings
// dropped from its front (cells cleared, empty leading rows dropped). Anything else it cannot
// prove unchanged (another line count, a line whose kept readings are not the ones joined,
// invalidate()) is joined again from scratch. Lines does the same for uPlot's layout with an x
// column per line. Pure: no DOM.

export class Join {
  constructor() {
    this.invalidate();
  }

  // The next update joins from scratch (the owner changed readings in the middle of a line).
  invalidate() {
    this.data = [[]];
    this.times = null; // per line: the times of the readings joined, in order
    this.lasts = null; // per line: the last value joined (a cheap check that it is the same)
    this.rebuilds = 0;
  }

  // columns: the lines' readings now. Returns the table, the same arrays as before when the
  // change could be applied in place.
  update(columns) {
    if (!this.times || this.times.length !== columns.length || !this.applyAll(columns)) {
      this.rebuild(columns);
    }
    return this.data;
  }

  rebuild(columns) {
    this.data = align(columns);
    this.times = columns.map((col) => col.map((p) => p[0]));
    this.lasts = columns.map((col) => (col.length ? col[col.length - 1][1] : undefined));
    this.rebuilds += 1;
  }

  // Checks every line first, then changes the table: a failed check leaves it untouched.
  applyAll(columns) {
    const plans = [];
    for (let c = 0; c < columns.length; c++) {
      const plan = planLine(this.times[c], this.lasts[c], columns[c]);
      if (!plan) return false;
      plans.push(plan);
    }
    let oldest = Infinity;
    for (let c = 0; c < columns.length; c++) {
      const { removed, added } = plans[c];
      const times = this.times[c];
      for (let i = 0; i < removed; i++) this.clear(c + 1, times[i]);
      if (removed) times.splice(0, removed);
      for (const [t, v] of added) {
        this.put(c + 1, t, v);
        times.push(t);
      }
      if (added.length) this.lasts[c] = added[added.length - 1][1];
      if (times.length && times[0] < oldest) oldest = times[0];
    }
    this.dropBefore(oldest);
    return true;
  }

  // The row of time t (binary search; the common case is near the end).
  row(t) {
    const xs = this.data[0];
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  put(s, t, v) {
    const xs = this.data[0];
    const n = xs.length;
    if (!n || xs[n - 1] < t) {
      xs.push(t);
      for (let k = 1; k < this.data.length; k++) this.data[k].push(k === s ? v : null);
      return;
    }
    const i = this.row(t);
    if (xs[i] === t) {
      this.data[s][i] = v; // a later reading at the same time wins, as in align()
      return;
    }
    xs.splice(i, 0, t); // a reading older than another line's newest: a row in between
    for (let k = 1; k < this.data.length; k++) this.data[k].splice(i, 0, k === s ? v : null);
  }

  clear(s, t) {
    const i = this.row(t);
    if (this.data[0][i] === t) this.data[s][i] = null;
  }

  // Rows before every line's first reading are empty: drop them.
  dropBefore(t) {
    const n = t === Infinity ? this.data[0].length : this.row(t);
    if (n) for (const col of this.data) col.splice(0, n);
  }
}

// uPlot's other layout (its mode 2): every line with its own x values, [null, [xs, ys], ...].
// Nothing to join; kept between redraws the same way (appends and front trims in place).
export class Lines {
  constructor() {
    this.invalidate();
  }

  invalidate() {
    this.data = null;
    this.lasts = null;
    this.rebuilds = 0;
  }

  update(columns) {
    if (!this.data || this.data.length !== columns.length + 1 || !this.applyAll(columns)) {
      this.data = [null, ...columns.map((col) => [col.map((p) => p[0]), col.map((p) => p[1])])];
      this.lasts = columns.map((col) => (col.length ? col[col.length - 1][1] : undefined));
      this.rebuilds += 1;
    }
    return this.data;
  }

  applyAll(columns) {
    const plans = [];
    for (let c = 0; c < columns.length; c++) {
      const plan = planLine(this.data[c + 1][0], this.lasts[c], columns[c]);
      if (!plan) return false;
      plans.push(plan);
    }
    plans.forEach(({ removed, added }, c) => {
      const [xs, ys] = this.data[c + 1];
      if (removed) {
        xs.splice(0, removed);
        ys.splice(0, removed);
      }
      for (const [t, v] of added) {
        xs.push(t);
        ys.push(v);
      }
      if (added.length) this.lasts[c] = added[added.length - 1][1];
    });
    return true;
  }
}

// What changed in a line since its readings at `times` (the last value `last`) were taken:
// {removed: readings gone from the front, added: readings at the end}, or null when the line
// changed some other way.
function planLine(times, last, col) {
  let removed = 0;
  if (col.length && times.length) {
    const first = col[0][0];
    while (removed < times.length && times[removed] < first) removed += 1;
  } else removed = col.length ? 0 : times.length;
  const kept = times.length - removed;
  if (col.length < kept) return null;
  if (kept) {
    const end = col[kept - 1];
    if (col[0][0] !== times[removed] || end[0] !== times[times.length - 1]) return null;
    if (!Object.is(end[1], last)) return null;
  }
  const added = col.slice(kept);
  const after = kept ? times[times.length - 1] : -Infinity;
  for (const p of added) if (!(p[0] >= after)) return null;
  return { removed, added };
}

// Columns for uPlot from lines sorted by time: [xs, ys0, ys1, ...], a null where a line has
// no value at that x. One merge pass over all lines (k-way, k is small).
export function align(columns) {
  const k = columns.length;
  const at = new Array(k).fill(0);
  const xs = [];
  const ys = columns.map(() => []);
  for (;;) {
    let t = Infinity;
    for (let s = 0; s < k; s++) {
      const p = columns[s][at[s]];
      if (p !== undefined && p[0] < t) t = p[0];
    }
    if (t === Infinity) break;
    xs.push(t);
    for (let s = 0; s < k; s++) {
      const col = columns[s];
      let v = null;
      while (at[s] < col.length && col[at[s]][0] === t) v = col[at[s]++][1];
      ys[s].push(v);
    }
  }
  return [xs, ...ys];
}

// -------------------------------------------------------------------- lookups by time
// The least and greatest value of the readings from..to of every line ([null, null]: none).
export function extent(series, from, to) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of series) {
    const pts = s.points;
    let i = firstAtOrAfter(pts, from);
    for (; i < pts.length && pts[i][0] <= to; i++) {
      const v = pts[i][1];
      if (v === null || !Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return lo === Infinity ? [null, null] : [lo, hi];
}

function firstAtOrAfter(points, t) {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function closestIndex(xs, t) {
  let lo = 0;
  let hi = xs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && t - xs[lo - 1] < xs[lo] - t ? lo - 1 : lo;
}
