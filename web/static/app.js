// movierec web demo: vanilla JS over the facade's /api (no framework, no CDN).
//
// A visitor gets a random numeric id (1,000,000,000-1,999,999,999) kept in localStorage
// with their liked movies, ratings and profile. Ratings go to POST /api/ratings under
// that id. The page is an onboarding flow:
//   1. "Tell us about yourself": saving the profile shows recommendations at once;
//   2. "Click movies you like": once a profile is saved, every like/unlike click fetches
//      them again, as `profile_and_liked` = the profile (with `user_id` = visitor id)
//      plus the liked ids and the movies rated 4-5 (none yet: the profile alone), with
//      every rated id in `exclude_movie_ids`; the status says how many likes were used.
// Without a profile, clicks only mark movies and "Recommend from my likes" sends them
// as `liked` (same liked ids and exclusions). The gateway leaves the liked ids out. Only
// the latest request's answer is shown (a click during a fetch wins). After a rating the
// current list is fetched again and the rated movie is gone. "More" repeats the last
// request with its next_page_token.
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
  seq: 0,  // the latest /api/recommend request: older answers are dropped
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
  if (profile()) recommend("onboarding");  // the list follows every click once onboarded
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

function profile() { return store.get("profile", null); }

function likedForQuery(ratedIds) {
  const fans = ratedIds.filter((id) => state.rated[id] >= 4 && !state.liked.has(id));
  return [...state.liked.keys(), ...fans];
}

function query(mode, topK) {
  const ratedIds = Object.keys(state.rated).map(Number);
  const likedIds = likedForQuery(ratedIds);
  if (mode === "liked") {
    return {liked: {movie_ids: likedIds}, exclude_movie_ids: ratedIds, top_k: topK};
  }
  const p = profile() || {};
  return {profile_and_liked: {
    profile: {age: p.age, gender: p.gender, occupation: p.occupation, user_id: state.visitor},
    liked: {movie_ids: likedIds}}, exclude_movie_ids: ratedIds, top_k: topK};
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function describe(body, data, shown) {
  const from = `from ${data.model_version}${data.cached ? " (cached)" : ""}`;
  if (body.profile_and_liked) {
    const n = body.profile_and_liked.liked.movie_ids.length;
    const likes = n ? ` + ${plural(n, "like")}` : " (no likes yet)";
    return `${plural(shown, "recommendation")} for your profile${likes} ${from}`;
  }
  if (body.liked) {
    return `${plural(shown, "recommendation")} for your ${plural(body.liked.movie_ids.length, "like")} ${from}`;
  }
  return `${plural(shown, "recommendation")} ${from}`;
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

// Fetch and show `body`'s recommendations; null when a newer request made this one stale.
async function run(body, append) {
  const seq = ++state.seq;
  clearError();
  $("recs").setAttribute("aria-busy", "true");
  let data;
  try {
    data = await api("/api/recommend", body);
  } catch (error) {
    if (seq !== state.seq) return null;
    $("recs").setAttribute("aria-busy", "false");
    throw error;
  }
  if (seq !== state.seq) return null;
  state.lastBody = body;
  state.token = data.next_page_token;
  const items = data.items.map(recItem);
  if (append) $("recs").append(...items); else $("recs").replaceChildren(...items);
  $("recs").setAttribute("aria-busy", "false");
  $("more").hidden = !state.token;
  say(describe(body, data, $("recs").children.length));
  return items;
}

function recommend(mode, topK = PAGE) {
  state.mode = mode;
  return run(query(mode, topK), false).catch(fail);
}

async function more() {
  try {
    const items = await run({...state.lastBody, page_token: state.token}, true);
    if (items && items.length) items[0].querySelector("button").focus();
  } catch (error) { fail(error); }
}

async function rate(item, stars) {
  try {
    await api("/api/ratings", {user_id: state.visitor, movie_id: item.movie_id, rating: stars});
    state.rated[item.movie_id] = stars;
    store.set("rated", state.rated);
    const shown = Math.min(100, Math.max(PAGE, $("recs").children.length));
    if (!await recommend(state.mode, shown)) return;  // failed, or a later click won
    say(`Rated “${item.title}” ${stars}/5 — ${$("status").textContent}`);
    $("results-h").focus();
  } catch (error) { fail(error); }
}

function renderProfileNote() {
  $("profile-note").textContent = profile()
    ? "Profile saved. Now click movies you like: the recommendations update after each click."
    : "Optional: without a profile, like a few movies below and press “Recommend from my likes”.";
}

function submitProfile(event) {
  event.preventDefault();
  store.set("profile", {age: Number($("age").value), gender: $("gender").value,
    occupation: Number($("occupation").value)});
  renderProfileNote();
  recommend("onboarding");
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
  renderProfileNote();
  api("/api/genres").then((d) => $("genre").append(...d.genres.map(
    (g) => el("option", {value: g, textContent: g})))).catch(() => {});
  showPopular().catch(fail);
}

document.addEventListener("DOMContentLoaded", setUp);
