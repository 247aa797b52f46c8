// Renders /openapi.json: operations grouped by tag, each with its auth,
// parameters, body schema and answers. No framework, no CDN.
(function () {
  "use strict";

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function schemaOf(documentJson, schema) {
    if (schema && schema.$ref) {
      var name = schema.$ref.split("/").pop();
      return documentJson.components.schemas[name] || schema;
    }
    return schema;
  }

  function authText(security) {
    if (!security || security.length === 0) return "no credentials";
    return security.map(function (requirement) {
      var names = Object.keys(requirement);
      return names.length === 0 ? "none" : names.join(" + ");
    }).join(" or ");
  }

  function operationNode(documentJson, method, path, operation) {
    var details = element("details");
    var summary = element("summary");
    summary.appendChild(element("span", method.toUpperCase(), "method"));
    summary.appendChild(element("span", path, "path"));
    summary.appendChild(document.createTextNode(" — " + operation.summary));
    details.appendChild(summary);
    var body = element("div", undefined, "body");
    body.appendChild(element("p", "Auth: " + authText(operation.security), "auth"));
    if (operation.requestBody) {
      var content = operation.requestBody.content["application/json"];
      body.appendChild(element("h4", "Request body" + (operation.requestBody.required ? "" : " (optional)")));
      body.appendChild(element("pre", JSON.stringify(schemaOf(documentJson, content.schema), null, 2)));
    }
    body.appendChild(element("h4", "Answers"));
    var list = element("ul");
    Object.keys(operation.responses).forEach(function (status) {
      var response = operation.responses[status];
      var types = response.content ? Object.keys(response.content).join(", ") : "no body";
      list.appendChild(element("li", status + " " + response.description + " (" + types + ")"));
    });
    body.appendChild(list);
    details.appendChild(body);
    return details;
  }

  function render(documentJson) {
    document.getElementById("intro").textContent = documentJson.info.description;
    var byTag = {};
    Object.keys(documentJson.paths).forEach(function (path) {
      var item = documentJson.paths[path];
      Object.keys(item).forEach(function (method) {
        var tag = item[method].tags[0];
        (byTag[tag] = byTag[tag] || []).push([method, path, item[method]]);
      });
    });
    var root = document.getElementById("operations");
    Object.keys(byTag).forEach(function (tag) {
      root.appendChild(element("h2", tag));
      byTag[tag].forEach(function (entry) {
        root.appendChild(operationNode(documentJson, entry[0], entry[1], entry[2]));
      });
    });
  }

  fetch("/openapi.json")
    .then(function (response) { return response.json(); })
    .then(render)
    .catch(function (error) {
      document.getElementById("problem").textContent = "The document did not load: " + error;
    });
})();
