/* journal-replay run timeline, served (journal ui): the rows arrive as JSON data blocks, not as
 * inline script, so that the page runs under a policy that allows no inline script at all. */
(function () {
  "use strict";
  const data = (id) => JSON.parse(document.getElementById(id).textContent);
  window.JT_FIELDS = data("jt-fields");
  window.JT_ROWS = data("jt-rows");
})();
