"""The dashboard's chart data kept between redraws (bridge/static/join.js) equals the table
joined from scratch, whatever happens to the lines in between: readings appended (at a new
time, at another line's time, older than another line's newest), dropped from the front,
duplicate times, lines emptied and refilled, and edits in the middle (which must be noticed
and joined afresh). Runs the module itself in Node with a seeded random walk of such steps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JOIN = Path(__file__).resolve().parents[2] / "bridge" / "static" / "join.js"

SCRIPT = """
const { Join, Lines, align } = await import(process.argv[1]);
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const lines = [[], [], []];
const join = new Join();
const own = new Lines();
let t = 1000, steps = 0, checks = 0;
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
// the expected table: the incremental one may also hold rows no line has a value at any more
// (emptied in the middle until the front passes them); drop those before comparing
const dense = (data) => {
  const keep = data[0].map((_, i) => data.slice(1).some((col) => col[i] !== null));
  return data.map((col) => col.filter((_, i) => keep[i]));
};
for (let i = 0; i < 4000; i++) {
  const r = rand();
  const line = lines[Math.floor(rand() * lines.length)];
  if (r < 0.6) {
    t += Math.floor(rand() * 3); // 0: a duplicate time; same times across lines are common
    line.push([t, Math.round(rand() * 100)]);
  } else if (r < 0.7 && line.length) {
    line.push([line[line.length - 1][0], Math.round(rand() * 100)]); // same time, new value
  } else if (r < 0.8) {
    // a reading older than another line's newest (but the newest of its own line)
    const last = line.length ? line[line.length - 1][0] : 0;
    line.push([Math.max(last, t - 5), Math.round(rand() * 100)]);
  } else if (r < 0.93) {
    const cut = t - 40 - Math.floor(rand() * 20);
    for (const l of lines) while (l.length && l[0][0] < cut) l.shift();
  } else if (r < 0.96 && line.length > 3) {
    // an edit in the middle: the owner says so (as the page does), or changes a value
    const k = Math.floor(rand() * (line.length - 1));
    if (rand() < 0.5) {
      line.splice(k, 0, [line[k][0], -1]);
      join.invalidate();
      own.invalidate();
    } else {
      line[line.length - 1] = [line[line.length - 1][0], -2]; // last value replaced: noticed
    }
  } else if (r < 0.98) {
    line.length = 0;
  }
  steps += 1;
  const want = align(lines);
  const got = join.update(lines);
  if (!same(dense(got), want)) throw new Error(`Join differs at step ${i}`);
  const mine = own.update(lines);
  const wantOwn = [null, ...lines.map((l) => [l.map((p) => p[0]), l.map((p) => p[1])])];
  if (!same(mine, wantOwn)) throw new Error(`Lines differs at step ${i}`);
  checks += 1;
}
if (join.rebuilds > steps / 4) throw new Error(`joined afresh too often: ${join.rebuilds}`);
console.log(JSON.stringify({ steps, checks, rebuilds: join.rebuilds }));
"""


def test_kept_join_equals_a_fresh_join() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed (apt-get install nodejs)")
    done = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, JOIN.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"checks":4000' in done.stdout
