// Thumbs up and down under a finished reply: `PUT /api/conversations/{id}/messages/{message_id}/feedback`.
// Clicking the pressed button again removes the rating. The buttons show what the server stored.

import { api } from "./api.js";
import { el } from "./dom.js";
import { announce } from "./page.js";

const RATINGS = [
  { rating: "up", text: "👍", label: "Good reply" },
  { rating: "down", text: "👎", label: "Bad reply" },
];

function press(bar, rating) {
  for (const button of bar.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.rating === rating));
  }
  bar.dataset.rating = rating || "";
}

/**
 * Show the feedback buttons in a finished reply's footer (once; a later call only updates them).
 * `feedback` is the message's stored feedback (`{rating, comment, ...}`) or null.
 */
export function showFeedback(view, { conversationId, messageId, feedback = null }) {
  if (!conversationId || !messageId) return;
  const shown = view.footer.querySelector('[data-testid="feedback"]');
  const kept = shown ? shown.dataset.rating || null : null; // a click made on the bar being replaced
  shown?.remove();
  const bar = el("div", { className: "feedback", testid: "feedback", attrs: { role: "group", "aria-label": "Rate this reply" } });
  for (const { rating, text, label } of RATINGS) {
    const button = el("button", {
      className: "btn-feedback",
      text,
      testid: `feedback-${rating}`,
      attrs: { type: "button", "aria-label": label, title: label },
    });
    button.dataset.rating = rating;
    button.addEventListener("click", async () => {
      const before = bar.dataset.rating || null;
      const next = before === rating ? null : rating;
      press(bar, next);
      bar.setAttribute("aria-busy", "true");
      try {
        const path = `/api/conversations/${encodeURIComponent(conversationId)}/messages/${encodeURIComponent(messageId)}/feedback`;
        const response = await api(path, { method: "PUT", body: { rating: next } });
        const stored = (await response.json()).feedback;
        press(bar, stored ? stored.rating : null);
        announce(stored ? "Thanks for the feedback." : "Feedback removed.");
      } catch (error) {
        press(bar, before);
        announce(`Could not save the feedback: ${error.message}`);
      } finally {
        bar.removeAttribute("aria-busy");
      }
    });
    bar.append(button);
  }
  press(bar, feedback ? feedback.rating : kept);
  view.footer.append(bar);
}
