// Colour scales shared by the heatmap, the thumbnails and the metric maps.

// White -> yellow -> green -> blue -> navy (ColorBrewer YlGnBu), as 256 RGB entries.
const STOPS = [
  [0.0, [255, 255, 255]],
  [0.12, [237, 248, 177]],
  [0.3, [127, 205, 187]],
  [0.55, [44, 127, 184]],
  [0.8, [37, 52, 148]],
  [1.0, [8, 29, 88]],
];

function interpolate(t) {
  for (let s = 1; s < STOPS.length; ++s) {
    const [t1, c1] = STOPS[s];
    const [t0, c0] = STOPS[s - 1];
    if (t <= t1) {
      const f = (t - t0) / (t1 - t0);
      return c0.map((c, k) => Math.round(c + f * (c1[k] - c)));
    }
  }
  return STOPS[STOPS.length - 1][1];
}

// lut[3 * i .. 3 * i + 2] = RGB of level i / 255.
export const WEIGHT_LUT = (() => {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; ++i) lut.set(interpolate(i / 255), 3 * i);
  return lut;
})();

export const MASKED_RGB = [236, 239, 243];

// Attention weight in [0, 1] -> colour level 0..255. The square root keeps the small
// weights of long rows visible (a uniform row over 2,000 keys is 0.0005 each).
export function weightLevel(w) {
  if (!(w > 0)) return 0;
  return w >= 1 ? 255 : Math.round(255 * Math.sqrt(w));
}

export function levelCss(level) {
  const i = 3 * level;
  return `rgb(${WEIGHT_LUT[i]},${WEIGHT_LUT[i + 1]},${WEIGHT_LUT[i + 2]})`;
}

// A metric value scaled to [lo, hi] -> CSS colour of the same scale (linear, not sqrt).
export function scaleCss(value, lo, hi) {
  const t = hi > lo ? Math.min(1, Math.max(0, (value - lo) / (hi - lo))) : 0.5;
  return levelCss(Math.round(255 * t));
}

export const HEAD_TYPE_COLORS = {
  self: "#7b3294",
  "beginning-focused": "#e66101",
  focused: "#1a9641",
  distributed: "#7f8c8d",
};
