// The page side of bench/dashboard_fps.py: draws 6 series x 15 min at 1 Hz, one new reading
// per series and a redraw per animation frame; counts frames and times each redraw.
const SERIES = 6, SPAN = 900 * 1000, COLORS = ["#5b9dff", "#3ecf8e", "#f5b942", "#c084fc", "#ff7a90", "#45d0d8"];
let t1 = Date.now();
const series = [...Array(SERIES).keys()].map((i) => ({
  name: `dev-${i}`, color: COLORS[i],
  points: [...Array(900).keys()].map((k) => [t1 - SPAN + k * 1000 + i * 37, 20 + i * 3 + Math.sin(k / 30 + i) * 5]),
}));
async function chart(variant) {
  const box = document.getElementById("box");
  if (variant === "before") {
    const { LineChart } = await import("./old/chart.js");
    const canvas = document.createElement("canvas");
    box.append(canvas);
    const c = new LineChart(canvas, { range: () => [t1 - SPAN, t1] });
    return () => { c.setSeries(series); c.draw(); };
  }
  const { TimeChart } = await import(variant === "first" ? "./first/chart.js" : "./new/chart.js");
  const c = new TimeChart(box, { height: 240, unit: "°C" });
  return () => { c.setSeries(series); c.setBase([t1 - SPAN, t1]); c.draw(); };
}
window.runBench = async (variant, seconds) => {
  const redraw = await chart(variant);
  const times = [];
  let frames = 0, k = 0;
  const start = performance.now();
  await new Promise((done) => {
    const step = () => {
      t1 += 1000; k += 1;
      for (const [i, s] of series.entries()) {
        s.points.push([t1 + i * 37, 20 + i * 3 + Math.sin((900 + k) / 30 + i) * 5]);
        s.points.shift();
      }
      const a = performance.now();
      redraw();
      times.push(performance.now() - a);
      frames += 1;
      if (performance.now() - start < seconds * 1000) requestAnimationFrame(step);
      else done();
    };
    requestAnimationFrame(step);
  });
  times.sort((a, b) => a - b);
  const elapsed = (performance.now() - start) / 1000;
  return { fps: frames / elapsed, median_ms: times[times.length >> 1], p95_ms: times[Math.floor(times.length * 0.95)] };
};
