// The traffic panel: payments per second by outcome and latency percentiles, over the last minutes.
import {on} from './feed.js';

const panel = document.getElementById('traffic');
const note = panel.querySelector('.note');
const charts = panel.querySelector('.charts');
let windowS = 300;
let rate = null;
let latency = null;
// uPlot's columns: times (Unix seconds), then one array per series.
let rateData = [[], [], [], []];
let latencyData = [[], [], []];

function width() {
  return Math.max(280, Math.floor(charts.clientWidth / 2) - 24);
}

function make(target, series, yLabel, data) {
  return new uPlot({
    width: width(), height: 190,
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
    axes: [{}, {label: yLabel, size: 60}],
    series: [{}, ...series.map(([label, stroke]) => ({label, stroke, width: 2, spanGaps: false, points: {show: false}}))],
    legend: {live: false},
  }, data, document.getElementById(target));
}

function draw() {
  if (rate === null) {
    rate = make('rate-chart', [['committed', '#1a7f37'], ['aborted', '#bf8700'], ['refused', '#cf222e']],
      'per second', rateData);
    latency = make('latency-chart', [['p50', '#0969da'], ['p99', '#8250df']], 'ms', latencyData);
  } else {
    rate.setData(rateData);
    latency.setData(latencyData);
  }
}

function trim(data) {
  const oldest = data[0].length ? data[0][data[0].length - 1] - windowS : 0;
  let drop = 0;
  while (drop < data[0].length && data[0][drop] < oldest) drop++;
  if (drop) for (const column of data) column.splice(0, drop);
}

on('metrics', (data, first) => {
  windowS = data.window_s;
  panel.querySelector('.window').textContent = `last ${Math.round(windowS / 60)} minutes`;
  if (first) {
    rateData = [[], [], [], []];
    latencyData = [[], [], []];
  }
  for (const p of data.points) {
    rateData[0].push(p.t); rateData[1].push(p.committed); rateData[2].push(p.aborted); rateData[3].push(p.refused);
    latencyData[0].push(p.t); latencyData[1].push(p.p50_ms); latencyData[2].push(p.p99_ms);
  }
  trim(rateData);
  trim(latencyData);
  note.textContent = data.note ?? '';
  note.hidden = !data.note;
  charts.hidden = rateData[0].length === 0;
  if (!charts.hidden) draw();
});

window.addEventListener('resize', () => {
  if (rate === null) return;
  rate.setSize({width: width(), height: 190});
  latency.setSize({width: width(), height: 190});
});
