// The frame both pages share: the top bar (who is signed in, sign out), the sign-in form,
// and the one place that turns a refused credential into a clear message.
import { signInWithApiKey, signInWithPassword, signOut, whoAmI } from "./auth.js";
import { el } from "./format.js";

const main = () => document.getElementById("main");

export function showMessage(title, text, kind = "error") {
  main().replaceChildren(el("section", { class: `message ${kind}`, role: "alert" },
    el("h1", {}, title), el("p", {}, text),
    el("p", {}, el("a", { href: "/runs" }, "All runs"))));
}

function renderUser(who) {
  const slot = document.getElementById("user");
  if (!slot) return;
  if (who.state !== "signed-in") {
    slot.replaceChildren();
    return;
  }
  slot.replaceChildren(
    el("span", { class: "who" }, el("span", { class: "name", title: who.name }, who.name || "signed in"), el("span", { class: "role" }, who.role)),
    el("button", { type: "button", class: "quiet", onclick: () => { signOut(); location.reload(); } }, "Sign out"));
}

function signInForm(notice) {
  const error = el("p", { class: "form-error", role: "alert", id: "signin-error" }, notice || "");
  const passwordFields = el("div", { id: "with-password" },
    el("label", { for: "email" }, "Email"),
    el("input", { id: "email", name: "email", type: "email", autocomplete: "username" }),
    el("label", { for: "password" }, "Password"),
    el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password" }));
  const keyFields = el("div", { id: "with-key", hidden: true },
    el("label", { for: "api-key" }, "Key"),
    el("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", placeholder: "keel_..." }));
  const choose = (useKey) => {
    passwordFields.hidden = useKey;
    keyFields.hidden = !useKey;
  };
  const form = el("form", { class: "signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in to Keel"),
    el("fieldset", { class: "choice" }, el("legend", {}, "Sign in with"),
      el("label", {}, el("input", { type: "radio", name: "method", value: "password", checked: true,
        onchange: () => choose(false) }), " Email and password"),
      el("label", {}, el("input", { type: "radio", name: "method", value: "key",
        onchange: () => choose(true) }), " API key")),
    passwordFields, keyFields, error,
    el("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      if (!keyFields.hidden) await signInWithApiKey(form.querySelector("#api-key").value);
      else await signInWithPassword(form.querySelector("#email").value, form.querySelector("#password").value);
      location.reload();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  return form;
}

/** Sign-in as needed, then the page: render(who), who.role being the caller's role. */
export async function start(render) {
  const who = await whoAmI();
  renderUser(who);
  if (who.state === "unreachable") {
    showMessage("Keel is not answering", who.msg);
    return;
  }
  if (who.state !== "signed-in") {
    if (who.state === "refused") signOut();
    main().replaceChildren(signInForm(who.msg));
    return;
  }
  try {
    await render(who);
  } catch (failure) {
    if (failure.status === 401) {
      signOut();
      main().replaceChildren(signInForm(`Your credential was refused: ${failure.message}`));
    } else if (failure.status === 403) {
      showMessage("Not allowed", failure.message);
    } else {
      showMessage("Something went wrong", failure.message);
    }
  }
}
