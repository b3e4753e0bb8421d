// clipd's demo page: plain ES module over the public REST API, no framework.
const $ = (id) => document.getElementById(id);
const PAGE = 24;

const state = {
  query: '',          // the text of the grid's current search
  not: '',            // its "but not" text: a term of weight -1
  offset: 0,          // how many results the grid holds
  seq: 0,             // newest search; older answers are dropped
  image: null,        // {b64} or {id}: the image of the image search
  detailId: null,
  busy: 0,
};

// ---- API ------------------------------------------------------------------

function apiKey() { return sessionStorage.getItem('clipd-key') || ''; }

function authHeaders(extra = {}) {
  const k = apiKey();
  return k ? { ...extra, Authorization: 'Bearer ' + k } : extra;
}

// fetch + the API's error JSON turned into a plain message.
async function api(path, { method = 'GET', json, body, quiet = false } = {}) {
  const headers = authHeaders(json !== undefined ? { 'Content-Type': 'application/json' } : {});
  if (!quiet) busy(1);
  try {
    let r;
    try {
      r = await fetch(path, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
    } catch (e) {
      throw new Error('The server cannot be reached (' + e.message + ').');
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!r.ok) {
      const msg = data && data.error ? data.error.message : (text || r.statusText);
      const err = new Error(r.status === 401 ? msg + ' Enter the API key at the top.' : msg);
      err.status = r.status;
      throw err;
    }
    return data;
  } finally {
    if (!quiet) busy(-1);
  }
}

function busy(d) {
  state.busy += d;
  $('spinner').hidden = state.busy <= 0;
  document.body.setAttribute('aria-busy', state.busy > 0 ? 'true' : 'false');
}

function showError(e) {
  const box = $('error');
  if (!e) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = e.message || String(e);
  box.hidden = false;
}

const thumb = (id) => `/v1/images/${id}/thumbnail?size=256`;
const fmt = (s) => (typeof s === 'number' ? s.toFixed(3) : '');
const imageName = (r) => r.filename || `image ${r.id}`;

// ---- the grid: text search ------------------------------------------------

function card(r) {
  const li = document.createElement('li');
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'card';
  b.dataset.id = r.id;
  b.setAttribute('aria-label', r.score === undefined ? `${imageName(r)}: open details`
                                                     : `${imageName(r)}, score ${fmt(r.score)}: open details`);
  const img = document.createElement('img');
  img.src = thumb(r.id);
  img.alt = imageName(r);
  img.loading = 'lazy';
  img.decoding = 'async';
  const s = document.createElement('span');
  s.className = 'score';
  s.textContent = fmt(r.score);
  s.title = 'cosine similarity';
  b.append(img, s);
  b.addEventListener('click', () => openDetail(r.id));
  li.append(b);
  return li;
}

async function search(q, append = false) {
  const seq = ++state.seq;
  q = q.trim();
  if (!append) { state.query = q; state.not = $('not').value.trim(); state.offset = 0; }
  if (!q) {
    $('grid').replaceChildren();
    $('more').hidden = true;
    setEmpty('results-empty', true, 'Type a query above, or drop, paste or pick an image below.');
    return;
  }
  try {
    // With a "but not" text, a query of two terms: the images are ranked
    // toward the query and away from it.
    const what = state.not ? { query: [{ text: q }, { text: state.not, weight: -1 }] } : { text: q };
    const w = when();
    const res = await api('/v1/search', {
      method: 'POST', json: { ...what, ...w, k: PAGE, offset: state.offset, facets: ['year'] },
    });
    if (seq !== state.seq) return;
    showError(null);
    if (!append) timeline(res.facets);
    const items = res.results.map(card);
    if (append) $('grid').append(...items); else $('grid').replaceChildren(...items);
    state.offset += res.results.length;
    $('more').hidden = res.results.length < PAGE;
    $('grid').dataset.query = q;
    $('grid').dataset.not = state.not;
    $('grid').dataset.sort = w.sort || 'score';
    $('grid').dataset.range = `${w.taken_after || ''}/${w.taken_before || ''}`;
    $('grid').dataset.state = 'done';
    setEmpty('results-empty', state.offset === 0, 'No images match. Add some below, or try other words.');
  } catch (e) {
    if (seq === state.seq) showError(e);
  }
}

// The date range and order beside the search box, as search fields: the
// "to" day is inclusive, so the range ends before the next day begins.
function when() {
  const w = {};
  const from = $('from').value, to = $('to').value, sort = $('sort').value;
  if (from) w.taken_after = from;
  if (to) {
    const next = new Date(to + 'T00:00:00Z');
    next.setUTCDate(next.getUTCDate() + 1);
    w.taken_before = next.toISOString().slice(0, 10);
  }
  if (sort !== 'score') w.sort = sort;
  return w;
}

// A year timeline from the facets of the matching images: a year narrows
// the range to it, "All years" clears the range.
function timeline(facets) {
  const nav = $('timeline');
  const years = facets && facets.year ? facets.year : [];
  if (!years.length) { nav.hidden = true; nav.replaceChildren(); return; }
  const max = Math.max(...years.map((y) => y.count));
  const buttons = years.map((y) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'year';
    b.dataset.year = y.value;
    b.textContent = `${y.value} (${y.count})`;
    b.style.setProperty('--share', String(y.count / max));
    b.setAttribute('aria-pressed', String($('from').value === `${y.value}-01-01` &&
                                          $('to').value === `${y.value}-12-31`));
    b.addEventListener('click', () => {
      $('from').value = `${y.value}-01-01`;
      $('to').value = `${y.value}-12-31`;
      search($('q').value);
    });
    return b;
  });
  const all = document.createElement('button');
  all.type = 'button';
  all.className = 'year all';
  all.textContent = 'All years';
  all.addEventListener('click', () => { $('from').value = ''; $('to').value = ''; search($('q').value); });
  const undated = facets.undated ? [Object.assign(document.createElement('span'), {
    className: 'undated', textContent: `${facets.undated} undated`,
  })] : [];
  nav.replaceChildren(all, ...buttons, ...undated);
  nav.hidden = false;
}

for (const id of ['from', 'to', 'sort']) $(id).addEventListener('change', () => search($('q').value));

function setEmpty(id, show, text) {
  const p = $(id);
  p.hidden = !show;
  if (text) p.textContent = text;
}

// Search as you type, but not while an input method composes (pinyin,
// kana, Hangul): its half-typed letters are not the query. The search
// runs when the composition ends.
let debounce = 0;
let composing = false;
function searchSoon() {
  clearTimeout(debounce);
  debounce = setTimeout(() => search($('q').value), 300);
}
for (const id of ['q', 'not']) {
  $(id).addEventListener('compositionstart', () => { composing = true; clearTimeout(debounce); });
  $(id).addEventListener('compositionend', () => { composing = false; searchSoon(); });
  $(id).addEventListener('input', (ev) => {
    if (ev.isComposing || composing) return;
    searchSoon();
  });
}
$('search-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (composing) return; // the Enter that confirms a composition
  clearTimeout(debounce);
  search($('q').value);
});
$('more').addEventListener('click', () => search(state.query, true));

// Arrow keys move between the cards of a grid.
function gridKeys(ul) {
  ul.addEventListener('keydown', (ev) => {
    const keys = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End'];
    if (!keys.includes(ev.key)) return;
    const cards = [...ul.querySelectorAll('.card')];
    const i = cards.indexOf(document.activeElement);
    if (i < 0) return;
    const top = cards[0].offsetTop;
    let cols = cards.findIndex((c) => c.offsetTop !== top);
    if (cols < 0) cols = cards.length;
    const j = { ArrowLeft: i - 1, ArrowRight: i + 1, ArrowUp: i - cols, ArrowDown: i + cols,
                Home: 0, End: cards.length - 1 }[ev.key];
    if (j >= 0 && j < cards.length) {
      ev.preventDefault();
      cards[j].focus();
    }
  });
}
gridKeys($('grid'));
gridKeys($('similar'));

// ---- search with an image --------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(new Error('The file cannot be read.'));
    fr.readAsDataURL(file);
  });
}

async function imageFromFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    showError(new Error(`${file.name || 'That file'} is not an image.`));
    return;
  }
  const prev = $('qpreview');
  if (prev.src.startsWith('blob:')) URL.revokeObjectURL(prev.src);
  prev.src = URL.createObjectURL(file);
  prev.alt = `The query image${file.name ? ': ' + file.name : ''}`;
  prev.hidden = false;
  state.image = { b64: await readAsDataURL(file) };
  imageSearch();
}

function imageFromStored(id) {
  const prev = $('qpreview');
  prev.src = thumb(id);
  prev.alt = `The query image: image ${id}`;
  prev.hidden = false;
  state.image = { id };
  imageSearch();
  $('query-image').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function imageBody(extra) {
  return state.image.id ? { image_id: state.image.id, ...extra } : { image_b64: state.image.b64, ...extra };
}

async function imageSearch() {
  if (!state.image) return;
  const mine = state.image;
  $('query-image').dataset.state = 'loading';
  const sim = api('/v1/search', { method: 'POST', json: imageBody({ k: 12 }) });
  const txt = api('/v1/search', { method: 'POST', json: imageBody({ k: 8, collection: 'texts' }) });
  const [a, b] = await Promise.allSettled([sim, txt]);
  if (mine !== state.image) return;
  showError(null);
  if (a.status === 'fulfilled') {
    $('similar').replaceChildren(...a.value.results.map(card));
    setEmpty('similar-empty', !a.value.results.length, 'No images to compare with yet.');
  } else {
    $('similar').replaceChildren();
    showError(a.reason);
  }
  if (b.status === 'fulfilled') {
    $('texts').replaceChildren(...b.value.results.map((t) => {
      const li = document.createElement('li');
      const s = document.createElement('span');
      s.className = 'score';
      s.textContent = fmt(t.score);
      const q = document.createElement('span');
      q.textContent = t.text;
      li.append(q, s);
      return li;
    }));
    setEmpty('texts-empty', !b.value.results.length,
      'No texts to compare with: add some with POST /v1/texts.');
  } else {
    $('texts').replaceChildren();
    showError(b.reason);
  }
  $('query-image').dataset.state = 'done';
  if ($('labels').value.trim()) classify();
}

async function classify() {
  if (!state.image) { showError(new Error('Give an image first: drop, paste or pick one.')); return; }
  const labels = $('labels').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (!labels.length) { showError(new Error('Enter at least one label.')); return; }
  try {
    const res = await api('/v1/classify', { method: 'POST', json: imageBody({ labels }) });
    $('bars').replaceChildren(...res.labels.map((l) => {
      const li = document.createElement('li');
      const name = document.createElement('span');
      name.className = 'label';
      name.textContent = l.label;
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.setAttribute('role', 'meter');
      bar.setAttribute('aria-label', l.label);
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', (l.prob * 100).toFixed(1));
      const fill = document.createElement('span');
      fill.className = 'fill';
      fill.style.width = `${(l.prob * 100).toFixed(1)}%`;
      bar.append(fill);
      const pct = document.createElement('span');
      pct.className = 'pct';
      pct.textContent = `${(l.prob * 100).toFixed(1)}%`;
      li.append(name, bar, pct);
      return li;
    }));
  } catch (e) {
    showError(e);
  }
}
$('classify-form').addEventListener('submit', (ev) => { ev.preventDefault(); classify(); });

$('qfile').addEventListener('change', () => { imageFromFile($('qfile').files[0]); $('qfile').value = ''; });

function dropZone(el, onFiles) {
  el.addEventListener('dragover', (ev) => { ev.preventDefault(); el.classList.add('over'); });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    el.classList.remove('over');
    const files = [...(ev.dataTransfer?.files || [])];
    if (files.length) onFiles(files);
  });
}
dropZone($('qdrop'), (files) => imageFromFile(files[0]));
dropZone($('updrop'), (files) => upload(files));
// A drop elsewhere must not navigate away from the page.
document.addEventListener('dragover', (ev) => ev.preventDefault());
document.addEventListener('drop', (ev) => ev.preventDefault());
$('qdrop').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); $('qfile').click(); }
});

document.addEventListener('paste', (ev) => {
  const f = [...(ev.clipboardData?.files || [])].find((x) => x.type.startsWith('image/'));
  if (f) { ev.preventDefault(); imageFromFile(f); }
});

// ---- detail ----------------------------------------------------------------

// What the file says about itself (EXIF): null where unknown.
function placeText(gps) {
  if (!gps) return null;
  const f = (v, pos, neg) => `${Math.abs(v).toFixed(5)}° ${v < 0 ? neg : pos}`;
  return `${f(gps.lat, 'N', 'S')}, ${f(gps.lon, 'E', 'W')}`;
}

function cameraText(c) {
  if (!c) return null;
  const body = [c.make, c.model].filter(Boolean);
  // Models often repeat the make ("Canon" + "Canon EOS R5").
  if (body.length === 2 && body[1].toLowerCase().startsWith(body[0].toLowerCase())) body.shift();
  const s = body.join(' ');
  return c.lens ? (s ? `${s}, ${c.lens}` : c.lens) : s || null;
}

async function openDetail(id) {
  let img;
  try {
    img = await api(`/v1/images/${id}`);
  } catch (e) {
    showError(e);
    return;
  }
  state.detailId = id;
  state.returnFocus = document.activeElement;
  $('detail-title').textContent = imageName(img);
  $('detail-img').src = `/v1/images/${id}/file`;
  $('detail-img').alt = imageName(img);
  const rows = [
    ['id', img.id], ['file', img.filename || '-'], ['type', img.mime],
    ['size', img.width && img.height ? `${img.width} × ${img.height}` : '-'],
    ['bytes', img.bytes], ['status', img.status + (img.error ? ': ' + img.error : '')],
    ['taken', img.taken ? img.taken.replace('T', ' ') : null],
    ['place', placeText(img.gps)], ['camera', cameraText(img.camera)],
    ['added', img.created_ms ? new Date(img.created_ms).toLocaleString() : '-'],
    ['metadata', img.meta && Object.keys(img.meta).length ? JSON.stringify(img.meta) : '-'],
    ['sha256', img.sha256],
  ];
  $('detail-meta').replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = String(v ?? '-');
    return [dt, dd];
  }));
  $('detail-delete').hidden = !apiKey();
  const d = $('detail');
  if (!d.open) d.showModal();
  $('detail-close').focus();
}

function closeDetail() {
  const d = $('detail');
  if (d.open) d.close();
}
$('detail').addEventListener('close', () => {
  state.detailId = null;
  if (state.returnFocus && state.returnFocus.isConnected) state.returnFocus.focus();
});
$('detail-close').addEventListener('click', closeDetail);
$('detail').addEventListener('click', (ev) => { if (ev.target === $('detail')) closeDetail(); });
$('detail-like').addEventListener('click', () => {
  const id = state.detailId;
  closeDetail();
  imageFromStored(id);
});
$('detail-delete').addEventListener('click', async () => {
  const id = state.detailId;
  if (!confirm(`Delete image ${id}? This cannot be undone.`)) return;
  try {
    await api(`/v1/images/${id}`, { method: 'DELETE' });
    closeDetail();
    document.querySelectorAll(`.card[data-id="${id}"]`).forEach((c) => c.parentElement.remove());
    loadStats();
  } catch (e) {
    showError(e);
  }
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && $('detail').open) closeDetail();
});

// ---- upload ------------------------------------------------------------------

function listError(name, msg) {
  const text = `${name}: ${msg}`;
  if ([...$('upload-errors').children].some((li) => li.textContent === text)) return;
  const li = document.createElement('li');
  li.textContent = text;
  $('upload-errors').append(li);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function upload(files) {
  files = files.filter((f) => f.size > 0);
  if (!files.length) return;
  const up = $('upload');
  const bar = $('progress');
  const text = $('progress-text');
  $('upload-errors').replaceChildren();
  up.dataset.state = 'uploading';
  bar.removeAttribute('value'); // indeterminate while sending
  text.textContent = `Sending ${files.length} file${files.length > 1 ? 's' : ''}…`;
  const form = new FormData();
  for (const f of files) form.append('file', f, f.name);
  let res;
  try {
    res = await api('/v1/ingest', { method: 'POST', body: form });
  } catch (e) {
    bar.value = 0;
    text.textContent = 'Upload failed.';
    up.dataset.state = 'failed';
    showError(e);
    return;
  }
  const names = new Map((res.items || []).map((i) => [i.id, i.name]));
  for (const r of res.rejected || []) listError(r.name || 'a file', r.error || r.code);
  const total = res.accepted || 0;
  let done = 0, failed = 0;
  if (res.job_id) {
    bar.max = total || 1;
    bar.value = 0;
    for (;;) {
      let job;
      try {
        job = await api(`/v1/jobs/${res.job_id}`, { quiet: true });
      } catch (e) {
        showError(e);
        await sleep(1000);
        continue;
      }
      done = job.done; failed = job.failed;
      bar.max = job.total || 1;
      bar.value = job.done + job.failed;
      text.textContent = `Indexed ${job.done} of ${job.total}` + (job.failed ? `, ${job.failed} failed` : '');
      if (job.state === 'done') {
        for (const e of job.errors || []) listError(e.name || names.get(e.id) || `image ${e.id}`, e.error || e.message || 'failed');
        break;
      }
      await sleep(250);
    }
  } else {
    bar.max = 1;
    bar.value = 1;
  }
  const dup = res.duplicates ? `, ${res.duplicates} already there` : '';
  const rej = (res.rejected || []).length ? `, ${res.rejected.length} rejected` : '';
  text.textContent = `Done: ${done} indexed${failed ? `, ${failed} failed` : ''}${dup}${rej}.`;
  up.dataset.state = 'done';
  loadStats();
  if (state.query) search(state.query);
  if (state.image) imageSearch();
}
$('files').addEventListener('change', () => { upload([...$('files').files]); $('files').value = ''; });

// ---- near duplicates -----------------------------------------------------------
// Groups from GET /v1/duplicates, a page at a time. In each group the first
// image (the oldest) is kept; the others start checked and "Delete checked"
// removes them with DELETE /v1/images/{id}.

const DUP_PAGE = 10;
const dups = { threshold: 0.95, offset: 0, seq: 0 };

function dupGroup(g) {
  const li = document.createElement('li');
  const head = document.createElement('div');
  head.className = 'head';
  const title = document.createElement('span');
  title.textContent = `${g.size} images` + (g.items_truncated ? ` (first ${g.items.length} shown)` : '');
  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'danger dup-delete';
  head.append(title, del);
  const ul = document.createElement('ul');
  ul.className = 'grid small';
  const boxes = [];
  g.items.forEach((it, i) => {
    const item = card(it);
    const label = document.createElement('label');
    label.className = 'pick';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = i > 0;
    box.dataset.id = it.id;
    box.setAttribute('aria-label', `delete ${imageName(it)}`);
    label.append(box, i > 0 ? 'delete' : 'delete (oldest)');
    item.append(label);
    ul.append(item);
    boxes.push(box);
  });
  const count = () => {
    const n = boxes.filter((b) => b.checked).length;
    del.textContent = `Delete checked (${n})`;
    del.disabled = n === 0;
  };
  boxes.forEach((b) => b.addEventListener('change', count));
  count();
  del.addEventListener('click', async () => {
    const ids = boxes.filter((b) => b.checked).map((b) => Number(b.dataset.id));
    if (!ids.length || !confirm(`Delete ${ids.length} image${ids.length > 1 ? 's' : ''}? This cannot be undone.`)) return;
    try {
      for (const id of ids) {
        await api(`/v1/images/${id}`, { method: 'DELETE' });
        document.querySelectorAll(`.card[data-id="${id}"]`).forEach((c) => c.parentElement.remove());
      }
      showError(null);
    } catch (e) {
      showError(e);
    }
    loadStats();
    findDuplicates();
  });
  li.append(head, ul);
  return li;
}

async function findDuplicates(append = false) {
  const seq = ++dups.seq;
  if (!append) {
    const t = Number($('dups-threshold').value);
    dups.threshold = Number.isFinite(t) ? t : 0.95;
    dups.offset = 0;
  }
  const list = $('dups-list');
  list.dataset.state = 'loading';
  try {
    const res = await api(`/v1/duplicates?threshold=${encodeURIComponent(dups.threshold)}` +
                          `&limit=${DUP_PAGE}&offset=${dups.offset}`);
    if (seq !== dups.seq) return;
    showError(null);
    const items = res.groups.map(dupGroup);
    if (append) list.append(...items); else list.replaceChildren(...items);
    dups.offset += res.groups.length;
    $('dups-more').hidden = dups.offset >= res.total_groups;
    setEmpty('dups-empty', res.total_groups === 0,
             `No near duplicates at ${res.threshold} among ${res.images} images.`);
    list.dataset.state = 'done';
  } catch (e) {
    if (seq === dups.seq) { showError(e); list.dataset.state = 'failed'; }
  }
}
$('dups-form').addEventListener('submit', (ev) => { ev.preventDefault(); findDuplicates(); });
$('dups-more').addEventListener('click', () => findDuplicates(true));

// ---- API key, stats ------------------------------------------------------------

$('api-key').value = apiKey();
$('api-key').addEventListener('change', () => {
  const v = $('api-key').value.trim();
  if (v) sessionStorage.setItem('clipd-key', v); else sessionStorage.removeItem('clipd-key');
  if (state.detailId) $('detail-delete').hidden = !v;
});

async function loadStats() {
  try {
    const s = await api('/v1/stats', { quiet: true });
    const imgs = s.images || {}, txts = s.texts || {}, m = s.model || {};
    $('stats').textContent =
      `${imgs.total ?? 0} images (${imgs.ready ?? 0} indexed) · ${txts.total ?? 0} texts · ` +
      `model ${m.id || '?'}${m.dim ? ` (${m.dim}-d)` : ''}`;
    if (!state.query) {
      setEmpty('results-empty', true, imgs.total ? 'Type a query above, or drop, paste or pick an image below.'
                                                 : 'No images yet: add some below, then search.');
    }
  } catch (e) {
    $('stats').textContent = `Statistics unavailable: ${e.message}`;
  }
}
loadStats();
document.documentElement.dataset.ready = 'true';
