// The booking dashboard: fills the form from the catalog, submits, and follows the booking's status.
(function () {
  const $ = (id) => document.getElementById(id);
  let testNames = {};

  async function loadCatalog() {
    const catalog = await (await fetch("/api/catalog")).json();
    for (const test of catalog.test_types) {
      testNames[test.id] = test.name;
      $("test_type").add(new Option(test.name, test.id));
    }
    for (const city of catalog.cities) $("city").add(new Option(city, city));
    const tomorrow = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
    $("date").value = tomorrow;
    $("date").min = new Date().toISOString().slice(0, 10);
  }

  const where = (p) => `${p.topic} partition ${p.partition} offset ${p.offset}`;

  function showLog(booking) {
    if (!booking.event) return;
    let text = `Booking event: ${where(booking.event)}`;
    if (booking.decision_event) {
      const ms = booking.decided_at_ms - booking.requested_at_ms;
      text += `\nDecision event: ${where(booking.decision_event)}, ${ms} ms after the booking`;
    } else {
      text += "\nDecision event: not yet (LabService reads the booking from the log)";
    }
    $("booking-log").textContent = text;
  }

  function showStatus(booking) {
    showLog(booking);
    const status = $("booking-status");
    status.textContent = booking.status;
    status.className = "status " + booking.status;
    if (booking.status === "confirmed") {
      $("booking-detail").textContent = `${booking.lab_name}, ${booking.lab_address} on ${booking.date}`;
    } else if (booking.status === "rejected") {
      $("booking-detail").textContent = `Not booked: ${booking.reason}`;
    } else {
      $("booking-detail").textContent = "Finding a lab…";
    }
  }

  async function follow(id) {
    for (let attempt = 0; attempt < 240; attempt++) {
      const response = await fetch(`/api/bookings/${id}`);
      if (response.ok) {
        const booking = await response.json();
        showStatus(booking);
        if (booking.status !== "pending") return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  $("booking-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("form-error").textContent = "";
    for (const input of document.querySelectorAll("#booking-form [aria-invalid]")) input.removeAttribute("aria-invalid");
    $("submit").disabled = true;
    const body = {
      test_type: $("test_type").value, patient_name: $("patient_name").value,
      email: $("email").value, city: $("city").value, date: $("date").value,
    };
    try {
      const response = await fetch("/api/bookings", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()) },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (response.status !== 202) {
        const fields = answer.fields ? Object.entries(answer.fields).map(([f, m]) => `${f.replace("_", " ")}: ${m}`).join("\n") : "";
        for (const field of Object.keys(answer.fields || {})) {
          if ($(field)) $(field).setAttribute("aria-invalid", "true");
        }
        $("form-error").textContent = fields || answer.message;
        return;
      }
      $("result-card").hidden = false;
      $("booking-id").textContent = answer.id;
      showStatus({ status: "pending" });
      $("lookup-email").value = body.email;
      await follow(answer.id);
    } catch (error) {
      $("form-error").textContent = "The service did not answer; please retry.";
    } finally {
      $("submit").disabled = false;
    }
  });

  $("lookup-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = encodeURIComponent($("lookup-email").value);
    const bookings = await (await fetch(`/api/bookings?email=${email}`)).json();
    const body = $("bookings-table").querySelector("tbody");
    body.innerHTML = "";
    for (const b of bookings) {
      const row = body.insertRow();
      for (const text of [b.date, testNames[b.test_type] || b.test_type, b.city]) {
        row.insertCell().textContent = text;
      }
      const status = row.insertCell();
      status.textContent = b.status;
      status.className = "status " + b.status;
      if (b.reason) {
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = b.reason;
        status.appendChild(reason);
      }
      row.insertCell().textContent = b.lab_name || "—";
    }
    $("bookings-table").hidden = bookings.length === 0;
    $("lookup-empty").hidden = bookings.length !== 0;
  });

  loadCatalog();
})();
