// Client tools: tools the model calls that run here, in the page (backend/chat/client_tools.py lists them). A paused
// reply's `client_tool_call {id, name, args}` is run with runClientTool, and the result is posted back as
// `POST /chatkit {thread_id, client_tool_results: [{id, result}]}`.

const THEME_KEY = "chat.theme";
const THEMES = new Set(["light", "dark", "system"]);

/** Apply a theme to the page: "light" or "dark" override the system setting, "system" follows it. */
export function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  else delete root.dataset.theme;
}

/** The theme saved by set_theme (or "system"). */
export function storedTheme() {
  try {
    const theme = window.localStorage.getItem(THEME_KEY);
    return THEMES.has(theme) ? theme : "system";
  } catch {
    return "system";
  }
}

function setTheme(args) {
  const theme = args && args.theme;
  if (!THEMES.has(theme)) return { error: `unknown theme: ${String(theme)}` };
  applyTheme(theme);
  try {
    if (theme === "system") window.localStorage.removeItem(THEME_KEY);
    else window.localStorage.setItem(THEME_KEY, theme);
  } catch {
    // storage disabled: the theme holds for this page only
  }
  return { theme };
}

/** Local time as ISO 8601 with the UTC offset, e.g. 2026-12-01T17:05:09+01:00. */
function localIso(now) {
  const pad = (n) => String(Math.trunc(Math.abs(n))).padStart(2, "0");
  const offset = -now.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const date = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
  const time = `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`;
  return `${date}T${time}${sign}${pad(offset / 60)}:${pad(offset % 60)}`;
}

function clientContext() {
  const options = Intl.DateTimeFormat().resolvedOptions();
  return {
    local_time: localIso(new Date()),
    time_zone: options.timeZone || "UTC",
    locale: navigator.language || options.locale || "en",
    viewport: { width: window.innerWidth, height: window.innerHeight },
  };
}

const TOOLS = { set_theme: setTheme, get_client_context: clientContext };

/** Run a client tool; an unknown tool or a failure becomes an `{error}` result for the model to handle. */
export function runClientTool(name, args) {
  const tool = Object.hasOwn(TOOLS, name) ? TOOLS[name] : null;
  if (!tool) return { error: `this page has no tool named ${String(name)}` };
  try {
    return tool(args);
  } catch (error) {
    return { error: `the tool failed: ${error.message}` };
  }
}
