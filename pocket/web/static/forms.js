// Form submissions: one request at a time per form (its button disabled while it
// is in flight), an Idempotency-Key per submission that a resend of the same
// submission keeps, and the API's messages shown beside the fields they name,
// until the next submission.

import { NoAnswer, errorOf, newKey, outcomeUnknown } from "./api.js";

/**
 * Handles a form's submissions.
 * send(values, key) calls the API and returns its answer; done(data, values)
 * runs on success; fieldFor maps an error code without fields (409
 * insufficient_funds, say) to the field it is about; refused(error, values),
 * if given, runs after a refusal (the wallet shown again, say), and returns
 * true when it has shown the error itself (where the form may be gone).
 */
export function handleForm(form, { send, done, fieldFor = {}, check = null, refused = null }) {
  let pending = null; // {signature, key}: a submission whose outcome is not known yet
  let busy = false;
  form.noValidate = true; // The API checks the fields, and says what is wrong.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    clearMessages(form);
    const values = valuesOf(form);
    const problem = check ? check(values) : null;
    if (problem) {
      showProblem(form, problem.field, problem.message);
      return;
    }
    const signature = JSON.stringify(values);
    if (pending === null || pending.signature !== signature) {
      pending = { signature, key: newKey() };
    }
    busy = true;
    setBusy(form, true);
    try {
      await submit(values);
    } finally {
      busy = false;
      setBusy(form, false);
      // Whether it is not known if the submission happened: its note stands
      // until it is sent again (see clearOthers).
      form.toggleAttribute("data-outcome-unknown", pending !== null);
    }
  });

  async function submit(values) {
    let result;
    try {
      result = await send(values, pending.key);
    } catch (error) {
      if (!(error instanceof NoAnswer)) throw error;
      showMessage(
        form,
        `No answer from the server (${error.message}). It is not known whether this ` +
          "happened: send it again, and it happens only once.",
        "error",
      );
      return;
    }
    if (!result.ok) {
      if (!outcomeUnknown(result)) pending = null;
      const error = errorOf(result);
      if (pending === null && refused && (await settle(() => refused(error, values), error.message))) return;
      showError(form, error, fieldFor, pending !== null);
      return;
    }
    // Done: a new submission, even of the same values, is a new request.
    pending = null;
    form.reset();
    await settle(() => done(result.data, values), "Done");
  }

  /**
   * Runs what follows an answer (showing the wallet again); a read that got no
   * answer says so after what the answer was (Done, or the refusal), and gives true.
   */
  async function settle(then, outcome) {
    try {
      return await then();
    } catch (error) {
      if (!(error instanceof NoAnswer)) throw error;
      const said = outcome.replace(/[.\s]+$/, "");
      showMessage(form, `${said}, but the page could not show it (${error.message}): reload the page.`, "error");
      return true;
    }
  }
}

/**
 * What a form said of its last submission (a refusal beside a field, a success)
 * is only true until the next submission, in any form: money may have moved
 * since. A form whose last outcome is unknown keeps its note: the resend it asks
 * for still stands. (The submitted form clears its own, in handleForm.)
 */
function clearOthers(event) {
  for (const form of document.forms) {
    if (form !== event.target && !form.hasAttribute("data-outcome-unknown")) {
      clearMessages(form);
    }
  }
  // Notes shown for forms that are gone (a hold's, once it ended).
  for (const note of document.querySelectorAll(".form-message[data-outside]")) {
    note.hidden = true;
    note.textContent = "";
  }
}

document.addEventListener("submit", clearOthers, true);

/** The form's named fields as strings, as typed (checkboxes: "on" or ""; radios: the one chosen). */
function valuesOf(form) {
  const values = {};
  for (const element of form.elements) {
    if (!element.name || element.type === "submit") continue;
    if (element.type === "radio") {
      if (element.checked) values[element.name] = element.value;
    } else {
      values[element.name] = element.type === "checkbox" ? (element.checked ? "on" : "") : element.value;
    }
  }
  return values;
}

/** Its buttons disabled while it is in flight: those of its own (form=), wherever they are. */
function setBusy(form, busy) {
  form.setAttribute("aria-busy", String(busy));
  for (const element of form.elements) {
    if (element.tagName === "BUTTON") element.disabled = busy;
  }
}

/** Shows an API error: beside each field it names, else for the whole form. */
function showError(form, error, fieldFor, resend) {
  const suffix = resend ? " Send it again: it happens only once." : "";
  let shown = false;
  let first = null;
  for (const [name, message] of Object.entries(error.fields || {})) {
    const input = form.elements[name];
    if (input) {
      showBeside(input, message);
      first = first || input;
      shown = true;
    }
  }
  const target = !error.fields && fieldFor[error.code] && form.elements[fieldFor[error.code]];
  if (target) {
    showBeside(target, error.message + suffix);
    first = target;
  } else if (!shown) {
    showMessage(form, error.message + suffix, "error");
  }
  if (first) first.focus();
}

function showProblem(form, field, message) {
  const input = form.elements[field];
  showBeside(input, message);
  input.focus();
}

/** A message under a field, tied to it for screen readers. */
function showBeside(input, message) {
  const note = errorNote(input);
  note.textContent = message;
  note.hidden = false;
  input.setAttribute("aria-invalid", "true");
}

function errorNote(input) {
  const id = `${input.id}-error`;
  let note = document.getElementById(id);
  if (!note) {
    note = document.createElement("p");
    note.id = id;
    note.className = "field-error";
    input.closest(".field").append(note);
    const described = input.getAttribute("aria-describedby");
    input.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
  }
  return note;
}

/** A message for the whole form: "ok" after a success, "error" when refused. */
export function showMessage(form, text, kind) {
  let note = form.querySelector(".form-message");
  if (!note) {
    note = document.createElement("p");
    note.className = "form-message";
    note.setAttribute("role", "status");
    form.append(note);
  }
  note.textContent = text;
  note.dataset.kind = kind;
  note.hidden = false;
}

export function clearMessages(form) {
  for (const note of form.querySelectorAll(".field-error, .form-message")) {
    note.hidden = true;
    note.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}
