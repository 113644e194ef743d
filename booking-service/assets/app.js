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

  function showStatus(booking) {
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
      for (const text of [b.date, testNames[b.test_type] || b.test_type, b.city, b.status, b.lab_name || b.reason || ""]) {
        row.insertCell().textContent = text;
      }
    }
    $("bookings-table").hidden = bookings.length === 0;
    $("lookup-empty").hidden = bookings.length !== 0;
  });

  loadCatalog();
})();
