"""The service's one HTML page: pick or type a product, see its neighbours as pictures."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Similar items</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}
figure{display:inline-block;margin:.5em;width:180px;vertical-align:top}
img{width:180px;height:180px;object-fit:contain;background:#eee}
figure.query img{outline:4px solid #c33}
#status{color:#555} .error{color:#b00}
</style></head>
<body>
<h1>Similar items</h1>
<form id="ask">
  <label>Product <input id="product" list="products" size="32" autocomplete="off"></label>
  <datalist id="products"></datalist>
  <label>k <input id="k" type="number" value="8" min="1" max="100"></label>
  <button type="submit">Show neighbours</button>
</form>
<p id="status"></p>
<div id="query"></div><hr><div id="results"></div>
<script>
const $ = (id) => document.getElementById(id);
function figure(pid, caption, cls) {
  const f = document.createElement("figure");
  if (cls) f.className = cls;
  const img = document.createElement("img");
  img.src = "/v1/images/" + encodeURIComponent(pid);
  img.alt = pid;
  const c = document.createElement("figcaption");
  c.innerHTML = caption;
  f.append(img, c);
  return f;
}
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
async function ask(pid) {
  $("status").className = ""; $("status").textContent = "asking...";
  const r = await fetch("/v1/similar/" + encodeURIComponent(pid) + "?k=" + $("k").value);
  const body = await r.json();
  $("query").replaceChildren(); $("results").replaceChildren();
  if (!r.ok) {
    $("status").className = "error"; $("status").textContent = body.detail; return;
  }
  const versions = Object.entries(body.versions).map(([c, v]) => c + " " + v).join(", ");
  $("status").textContent = body.neighbours.length + " neighbours from " + versions;
  const own = "query <b>" + esc(pid) + "</b><br>" + esc(body.query_category);
  $("query").append(figure(pid, own, "query"));
  body.neighbours.forEach((n, i) => $("results").append(figure(n.product_id,
    "#" + (i + 1) + " <b>" + esc(n.product_id) + "</b><br>" + esc(n.category) +
    " &middot; distance " + n.distance.toFixed(4))));
}
$("ask").addEventListener("submit", (e) => { e.preventDefault(); ask($("product").value.trim()); });
fetch("/v1/products?limit=200").then((r) => r.json()).then((byCat) => {
  for (const [cat, ids] of Object.entries(byCat)) for (const pid of ids) {
    const o = document.createElement("option");
    o.value = pid; o.label = cat; $("products").append(o);
  }
  const first = Object.values(byCat).flat()[0];
  if (first && !$("product").value) $("product").value = first;
});
</script>
</body></html>
"""
