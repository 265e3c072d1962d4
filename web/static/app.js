// movierec web demo: vanilla JS over the facade's /api (no framework, no CDN).
//
// A visitor gets a random numeric id (1,000,000,000-1,999,999,999) kept in localStorage
// with their liked movies, ratings and profile. Ratings go to POST /api/ratings under
// that id. "Recommend from my likes" sends the liked ids plus movies rated 4-5 as
// `liked`, with every rated id in `exclude_movie_ids`; "Recommend for my profile"
// sends the profile with `user_id` = visitor id, so the gateway hides rated movies
// itself (a known user's rated movies are hidden by default). After a rating the current list is fetched again and the
// rated movie is gone. "More" repeats the last request with its next_page_token.
"use strict";

const PAGE = 12;
const OCCUPATIONS = ["other / not said", "academic/educator", "artist", "clerical/admin",
  "college/grad student", "customer service", "doctor/health care", "executive/managerial",
  "farmer", "homemaker", "K-12 student", "lawyer", "programmer", "retired",
  "sales/marketing", "scientist", "self-employed", "technician/engineer",
  "tradesman/craftsman", "unemployed", "writer"];
const $ = (id) => document.getElementById(id);
const store = {
  get: (key, fallback) => JSON.parse(localStorage.getItem("movierec." + key) || "null") ?? fallback,
  set: (key, value) => localStorage.setItem("movierec." + key, JSON.stringify(value)),
};

const state = {
  visitor: store.get("visitor", null),
  liked: new Map(store.get("liked", []).map((m) => [m.movie_id, m])),
  rated: store.get("rated", {}),
  mode: null, lastBody: null, token: "",
};

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json"}};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function say(text) { $("status").textContent = text; }
function fail(error) { $("error").hidden = false; $("error").textContent = error.message; }
function clearError() { $("error").hidden = true; $("error").textContent = ""; }

function movieLabel(m) {
  return [el("span", {className: "title", textContent: m.title}),
    el("span", {className: "year", textContent: m.year ? String(m.year) : ""}),
    el("span", {className: "genres", textContent: m.genres.join(" · ")})];
}

// ---- picking liked movies -------------------------------------------------------

function renderGrid(movies, caption) {
  $("grid-caption").textContent = caption;
  $("grid").replaceChildren(...movies.map((m) => {
    const button = el("button", {type: "button", className: "movie"}, ...movieLabel(m));
    button.dataset.movieId = m.movie_id;
    button.setAttribute("aria-pressed", String(state.liked.has(m.movie_id)));
    button.addEventListener("click", () => toggleLike(m, button));
    return el("li", {}, button);
  }));
}

function toggleLike(movie, button) {
  if (state.liked.has(movie.movie_id)) state.liked.delete(movie.movie_id);
  else state.liked.set(movie.movie_id, movie);
  button.setAttribute("aria-pressed", String(state.liked.has(movie.movie_id)));
  store.set("liked", [...state.liked.values()]);
  renderLiked();
}

function renderLiked() {
  const titles = [...state.liked.values()].map((m) => m.title);
  $("liked-list").textContent = titles.length ? titles.join(", ") : "none yet — click a movie above";
  $("liked-count").textContent = String(titles.length);
  $("recommend-liked").disabled = titles.length === 0;
}

async function showPopular() {
  const genre = $("genre").value;
  const data = await api(`/api/movies/popular?limit=24${genre ? "&genre=" + encodeURIComponent(genre) : ""}`);
  renderGrid(data.movies, `Popular${genre ? " " + genre : ""} movies — click to like`);
}

async function search(event) {
  event.preventDefault();
  clearError();
  const q = $("q").value.trim();
  if (!q) return showPopular().catch(fail);
  const genre = $("genre").value;
  const params = new URLSearchParams({q, limit: "24", ...(genre ? {genre} : {})});
  try {
    const data = await api(`/api/movies/search?${params}`);
    const n = data.movies.length;
    renderGrid(data.movies, `${n} title${n === 1 ? "" : "s"} matching “${q}”`);
  } catch (error) { fail(error); }
}

// ---- recommendations ------------------------------------------------------------

function query(mode, topK) {
  const ratedIds = Object.keys(state.rated).map(Number);
  const likedIds = [...state.liked.keys()];
  if (mode === "liked") {
    const fans = ratedIds.filter((id) => state.rated[id] >= 4 && !state.liked.has(id));
    return {liked: {movie_ids: [...likedIds, ...fans]}, exclude_movie_ids: ratedIds, top_k: topK};
  }
  const p = store.get("profile", {});
  return {profile: {age: p.age, gender: p.gender, occupation: p.occupation, user_id: state.visitor},
    exclude_movie_ids: likedIds, top_k: topK};
}

function recItem(item) {
  const stars = [1, 2, 3, 4, 5].map((n) => {
    const b = el("button", {type: "button", textContent: `${n}★`});
    b.dataset.stars = n;
    b.setAttribute("aria-label", `${n} of 5 stars for ${item.title}`);
    b.addEventListener("click", () => rate(item, n));
    return b;
  });
  const rating = el("div", {className: "rate"}, el("span", {textContent: "Rate:"}), ...stars);
  rating.setAttribute("role", "group");
  rating.setAttribute("aria-label", `Rate ${item.title}`);
  const li = el("li", {className: "rec"},
    el("div", {}, ...movieLabel(item).flatMap((part) => [part, " "])),
    el("div", {className: "score", textContent: `score ${item.score.toFixed(3)}`}),
    el("p", {className: "reason", textContent: item.reason}), rating);
  li.dataset.movieId = item.movie_id;
  return li;
}

async function run(body, append) {
  clearError();
  const data = await api("/api/recommend", body);
  state.lastBody = body;
  state.token = data.next_page_token;
  const items = data.items.map(recItem);
  if (append) $("recs").append(...items); else $("recs").replaceChildren(...items);
  $("more").hidden = !state.token;
  const shown = $("recs").children.length;
  say(`${shown} recommendations from ${data.model_version}${data.cached ? " (cached)" : ""}`);
  return items;
}

function recommend(mode, topK = PAGE) {
  state.mode = mode;
  return run(query(mode, topK), false).catch(fail);
}

async function more() {
  try {
    const items = await run({...state.lastBody, page_token: state.token}, true);
    if (items.length) items[0].querySelector("button").focus();
  } catch (error) { fail(error); }
}

async function rate(item, stars) {
  try {
    await api("/api/ratings", {user_id: state.visitor, movie_id: item.movie_id, rating: stars});
    state.rated[item.movie_id] = stars;
    store.set("rated", state.rated);
    const shown = Math.min(100, Math.max(PAGE, $("recs").children.length));
    await recommend(state.mode, shown);
    say(`Rated “${item.title}” ${stars}/5 — ${$("status").textContent}`);
    $("results-h").focus();
  } catch (error) { fail(error); }
}

function submitProfile(event) {
  event.preventDefault();
  store.set("profile", {age: Number($("age").value), gender: $("gender").value,
    occupation: Number($("occupation").value)});
  recommend("profile");
}

// ---- start-up -------------------------------------------------------------------

function setUp() {
  if (!state.visitor) {
    state.visitor = 1_000_000_000 + Math.floor(Math.random() * 1_000_000_000);
    store.set("visitor", state.visitor);
  }
  $("visitor-id").textContent = String(state.visitor);
  $("occupation").append(...OCCUPATIONS.map((name, i) => el("option", {value: i, textContent: name})));
  const p = store.get("profile", null);
  if (p) { $("age").value = p.age; $("gender").value = p.gender; $("occupation").value = p.occupation; }
  $("search-form").addEventListener("submit", search);
  $("popular").addEventListener("click", () => { $("q").value = ""; showPopular().catch(fail); });
  $("genre").addEventListener("change", () => { if (!$("q").value.trim()) showPopular().catch(fail); });
  $("recommend-liked").addEventListener("click", () => recommend("liked"));
  $("profile-form").addEventListener("submit", submitProfile);
  $("more").addEventListener("click", more);
  $("forget").addEventListener("click", () => {
    Object.keys(localStorage).filter((k) => k.startsWith("movierec.")).forEach((k) => localStorage.removeItem(k));
    location.reload();
  });
  renderLiked();
  api("/api/genres").then((d) => $("genre").append(...d.genres.map(
    (g) => el("option", {value: g, textContent: g})))).catch(() => {});
  showPopular().catch(fail);
}

document.addEventListener("DOMContentLoaded", setUp);
