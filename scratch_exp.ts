const d = new Float32Array(1 << 20).map((_, i) => Math.sin(i) * 10);
let t0 = performance.now(); let s = 0;
for (let r = 0; r < 20; r++) for (let j = 0; j < d.length; j++) s += Math.exp(d[j] - 10);
console.log("exp", (performance.now() - t0) / (20 * d.length) * 1e6, "ns/elem", s);
t0 = performance.now(); s = 0;
for (let r = 0; r < 20; r++) for (let j = 0; j < d.length; j++) s += d[j] * 0.5 - 1;
console.log("mul", (performance.now() - t0) / (20 * d.length) * 1e6, "ns/elem", s);
