// The hosted checkout page: keeps the status live (server-sent events, else polling), counts
// down to the deadline, and for a deferred order creates the payment when the buyer presses Pay.
// What the page says of the order comes from the server's state; this file only places it.
"use strict";

(() => {
  const root = document.getElementById("checkout");
  const element = (id) => document.getElementById(id);
  // A short pause on "paid" before the return page, so that the buyer sees it went through.
  const RETURN_PAUSE_MS = 3000;
  const POLL_MS = 2000;
  // The server ends each stream after a while and the browser reconnects: only failures with
  // no event in between mean that events do not get through (a proxy that buffers them, say).
  const FAILURES_BEFORE_POLLING = 3;

  let state = JSON.parse(root.dataset.state);
  let deadline = null; // this device's clock, in ms: the server counts the seconds left
  let refused = false; // the server would not create the payment: this page cannot pay
  let paying = false;
  let returning = false;
  let stream = null;

  function setText(node, text) {
    // Unchanged text is left alone: screen readers would read the status out again.
    if (node.textContent !== text) {
      node.textContent = text;
    }
  }

  function sentence(text) {
    const trimmed = text.trim();
    const capitalised = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
    return /[.!?]$/.test(capitalised) ? capitalised : `${capitalised}.`;
  }

  function problem(text) {
    element("problem").hidden = text === null;
    setText(element("problem"), text || "");
  }

  function render() {
    const status = element("status");
    const quoteRefused = refused && state.phase === "quote";
    setText(status, quoteRefused ? "This order can no longer be paid." : state.message);
    status.classList.toggle("good", state.phase === "paid");
    status.classList.toggle("bad", state.final && state.phase !== "paid");

    const image = element("qr-image");
    if (state.qr_image !== null && image.getAttribute("src") !== state.qr_image) {
      image.setAttribute("src", state.qr_image);
    }
    element("pay-link").hidden = state.pay_link === null;
    if (state.pay_link !== null) {
      element("pay-link-anchor").href = state.pay_link;
    }
    element("pay").hidden = state.phase !== "quote" || refused;
    element("pay").disabled = paying;
    if (!refused && (state.phase === "scan" || state.final)) {
      problem(null);
    }
    tick();

    if (state.phase === "paid" && state.return_url !== null && !returning) {
      returning = true;
      element("return-link").href = state.return_url;
      element("return").hidden = false;
      window.setTimeout(() => window.location.assign(state.return_url), RETURN_PAUSE_MS);
    }
  }

  function tick() {
    const left = deadline === null ? 0 : Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const running = deadline !== null && left > 0 && !refused;
    element("countdown").hidden = !running;
    // Past the deadline nothing here may be paid, whatever the server says a second later.
    element("qr").hidden = state.qr_image === null || !running;
    if (!running) {
      return;
    }
    const label = state.phase === "quote" ? "This price holds for" : "Time left to pay";
    setText(element("countdown-label"), label);
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, "0");
    const time = element("countdown-time");
    setText(time, `${minutes}:${seconds}`);
    time.setAttribute("datetime", `PT${minutes}M${left % 60}S`);
  }

  function update(next) {
    state = next;
    deadline = next.seconds_left === null ? null : Date.now() + next.seconds_left * 1000;
    render();
    if (next.final && stream !== null) {
      stream.close();
      stream = null;
    }
  }

  function listen() {
    if (!("EventSource" in window)) {
      poll();
      return;
    }
    let failures = 0;
    stream = new EventSource(root.dataset.eventsUrl);
    stream.onmessage = (event) => {
      failures = 0;
      update(JSON.parse(event.data));
    };
    stream.onerror = () => {
      failures += 1;
      if (stream.readyState === EventSource.CLOSED || failures >= FAILURES_BEFORE_POLLING) {
        stream.close();
        stream = null;
        poll();
      }
    };
  }

  async function refresh() {
    const response = await fetch(root.dataset.stateUrl, { cache: "no-store" });
    if (response.status === 404) {
      throw new Error("This payment link no longer opens an order.");
    }
    if (response.ok) {
      update(await response.json());
    }
  }

  async function poll() {
    while (!state.final) {
      try {
        await refresh();
      } catch (failure) {
        if (failure instanceof TypeError) {
          // Offline for a moment: the next round may get through.
        } else {
          problem(failure.message);
          return;
        }
      }
      await new Promise((resolve) => window.setTimeout(resolve, POLL_MS));
    }
  }

  async function pay() {
    paying = true;
    problem(null);
    render();
    try {
      const response = await fetch(root.dataset.paymentUrl, {
        method: "POST",
        headers: { "X-Checkout-Token": root.dataset.token },
      });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        await refresh();
      } else if (response.status === 409) {
        refused = true;
        const price = answer.amount
          ? ` The current price is ${answer.amount} ${answer.currency}.`
          : "";
        problem(`${sentence(answer.detail || "this order can no longer be paid")}${price}`);
      } else {
        notMade(answer.detail || response.statusText);
      }
    } catch (failure) {
      notMade(failure instanceof TypeError ? "there is no connection" : failure.message);
    } finally {
      paying = false;
      render();
    }
  }

  function notMade(reason) {
    problem(`${sentence(reason)} The payment was not created: please try again.`);
  }

  element("pay").addEventListener("click", pay);
  update(state);
  window.setInterval(tick, 1000);
  if (!state.final) {
    listen();
  }
})();
