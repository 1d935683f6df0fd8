// worker_threads: starts Workers that block, one after another, until one
// cannot start; then it prints the error and exits 1 at once.
const { Worker } = require('worker_threads');
console.log(`pid=${process.pid}`);
const workers = [];
function fail(e) {
  console.log(`created=${workers.length}`);
  console.error(`rt_nodeworkers: ${e.code || ''} ${e.message}`);
  process.exit(1);
}
for (let i = 0; i < 1000; i++) {
  let w;
  try {
    w = new Worker('setInterval(() => {}, 1e9)', { eval: true, resourceLimits: { stackSizeMb: 1 } });
  } catch (e) {
    fail(e);
  }
  w.on('error', fail);
  workers.push(w);
}
console.log('all workers started');
