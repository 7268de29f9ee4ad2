;;; gastownd-feed.el --- gastownd: the live event feed  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; The live event feed (`gastownd-feed') and the event types it accepts.
;; Part of the gastownd package: load it with (require 'gastownd).

;;; Code:

(require 'cl-lib)
(require 'subr-x)
(require 'gastownd-core)

(declare-function gastownd--show-session "gastownd-sessions" (root id hint &optional row))
(declare-function gastownd-who "gastownd-sessions" (issue))

;;;; Event types

(defconst gastownd-known-types
  '("boot" "done" "escalation_acked" "escalation_closed" "escalation_sent"
    "halt" "handoff" "hook" "mail" "mass_death" "merge_failed"
    "merge_skipped" "merge_started" "merged" "nudge" "patrol_complete"
    "patrol_started" "polecat_checked" "polecat_nudged"
    "scheduler_close_retry" "scheduler_dispatch" "scheduler_dispatch_failed"
    "scheduler_enqueue" "session_death" "session_end" "session_start" "sling"
    "spawn" "unhook")
  "Gas Town's and gastownd's event types (the set is open: see below).")

(defvar gastownd--seen-types nil
  "Event types shown in a feed so far; they are known from then on.")

(defun gastownd--saw-type (type)
  "Remember TYPE, the type of an event shown."
  (when (and (stringp type) (not (member type gastownd--seen-types)))
    (push type gastownd--seen-types)))

(defun gastownd--known-types ()
  "The known event types, sorted: `gastownd-known-types' and those seen.
The set of types is open (`gt activity emit' takes any), so a type is
known once a feed has shown one of its events."
  (sort (delete-dups (append gastownd-known-types gastownd--seen-types nil))
        #'string<))

(defun gastownd--parse-types (types)
  "The event types named by TYPES, a list of strings, or an error string.
Each string may hold several types separated by commas or spaces:
\"sling done\", \"sling,done\" and \"sling, done\" are the same."
  (let ((known (gastownd--known-types))
        found unknown)
    (dolist (name (split-string (string-join types " ") "[ ,]+" t))
      (cond ((not (member name known)) (push name unknown))
            ((not (member name found)) (push name found))))
    (if unknown
        (format "unknown event type%s %s (known: %s)"
                (if (cdr unknown) "s" "")
                (string-join (nreverse unknown) ", ")
                (string-join known ", "))
      (nreverse found))))

(defun gastownd--read-types ()
  "Ask for event types, with completion; separated by commas."
  (completing-read-multiple "Event types (blank for all): "
                            (gastownd--known-types)))

;;;; The feed

(cl-defstruct (gastownd--feed (:constructor gastownd--feed-create))
  "A running feed: its buffer, filter, last cursor shown and connection."
  buffer root types all-nodes cursor fresh process (generation 0) delay down
  ever-up retry-timer reply-timer local-node local-node-known placeholder)

(defvar gastownd--the-feed nil
  "The running feed (there is one feed buffer).")

(defconst gastownd-feed-buffer-name "*gastownd-feed*"
  "The name of the feed buffer.")

(defconst gastownd-feed-waiting "-- waiting for the daemon…"
  "The feed's line until the daemon answers.")

(defconst gastownd-feed-empty "-- no events yet: new ones appear here"
  "The feed's line when the log has no event to show.")

(defvar gastownd-feed-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map special-mode-map)
    (define-key map (kbd "RET") #'gastownd-feed-enter)
    map)
  "Keymap of `gastownd-feed-mode'.")

(define-derived-mode gastownd-feed-mode special-mode "gastownd-feed"
  "The live event feed of a town: one line per event, newest at the bottom.
\\<gastownd-feed-mode-map>\\[gastownd-feed-enter] on an issue id shows
who touched it; elsewhere on a line, it opens the line's session.
\\[revert-buffer] reads the latest events again.

\\{gastownd-feed-mode-map}"
  (setq-local revert-buffer-function #'gastownd--feed-revert)
  (setq-local truncate-lines t)
  (add-hook 'kill-buffer-hook #'gastownd--feed-killed nil t))

(defun gastownd--feed-mode-name (types all-nodes)
  "The feed's mode name, which shows its filter: TYPES and ALL-NODES."
  (concat "gastownd-feed"
          (when (or types all-nodes)
            (format "[%s]"
                    (string-join (append types
                                         (when all-nodes '("all-nodes")))
                                 " ")))))

(defun gastownd-feed-enter ()
  "On an issue id, show who touched it; elsewhere, the line's session."
  (interactive)
  (let* ((issue (gastownd--issue-at-point))
         (event (get-text-property (line-beginning-position) 'gastownd-event))
         (payload (alist-get 'payload event))
         (id (and (consp payload) (alist-get 'session_id payload))))
    (cond (issue (gastownd-who issue))
          ((and (stringp id) (not (string-empty-p id)))
           (gastownd--show-session (gastownd--town-root) id
                                   (and (equal (alist-get 'type event)
                                               "session_end")
                                        "ended")))
          (t (gastownd--notify "no session or issue id on this line")))))

(defun gastownd--trim-lines (limit)
  "Delete the first lines of the current buffer beyond the last LIMIT."
  (let ((excess (- (count-lines (point-min) (point-max)) limit)))
    (when (> excess 0)
      (goto-char (point-min))
      (forward-line excess)
      (delete-region (point-min) (point)))))

(defun gastownd--feed-append (feed lines)
  "Append LINES to FEED's buffer; keep its last `gastownd-feed-lines' lines.
Windows at the end of the buffer stay at its end."
  (let ((buffer (gastownd--feed-buffer feed)))
    (when (and lines (buffer-live-p buffer))
      (with-current-buffer buffer
        (let* ((inhibit-read-only t)
               (end (point-max))
               (following (cl-remove-if-not
                           (lambda (window) (= (window-point window) end))
                           (get-buffer-window-list buffer nil t)))
               (at-end (= (point) end)))
          (when (gastownd--feed-placeholder feed)
            ;; The "waiting" line goes once there is something to show.
            (setf (gastownd--feed-placeholder feed) nil)
            (erase-buffer))
          (save-excursion
            (goto-char (point-max))
            (dolist (line lines) (insert line "\n"))
            (gastownd--trim-lines gastownd-feed-lines))
          (when at-end (goto-char (point-max)))
          (dolist (window following)
            (set-window-point window (point-max))))))))

(defun gastownd--feed-say (feed text)
  "Append TEXT to FEED as a line of the feed's own."
  (gastownd--feed-append feed (list (gastownd--marker text))))

(defun gastownd--feed-cancel-reply-timer (feed)
  "Cancel FEED's reply timer, if there is one."
  (when (gastownd--feed-reply-timer feed)
    (cancel-timer (gastownd--feed-reply-timer feed))
    (setf (gastownd--feed-reply-timer feed) nil)))

(defun gastownd--feed-disconnect (feed)
  "Close FEED's connection; frames still on their way are ignored."
  (cl-incf (gastownd--feed-generation feed))
  (gastownd--feed-cancel-reply-timer feed)
  (gastownd--close (gastownd--feed-process feed))
  (setf (gastownd--feed-process feed) nil))

(defun gastownd--feed-reason (err)
  "What ERR, the end of a feed's connection, means, on one line."
  (if (equal (plist-get err :code) "end")
      "the daemon ended the stream (stopping?)"
    (gastownd--describe "subscribe" err)))

(defun gastownd--feed-retry (feed delay)
  "Reconnect FEED after DELAY seconds."
  (when (gastownd--feed-retry-timer feed)
    (cancel-timer (gastownd--feed-retry-timer feed)))
  (setf (gastownd--feed-retry-timer feed)
        (run-at-time delay nil
                     (lambda ()
                       (when (eq gastownd--the-feed feed)
                         (gastownd--feed-connect feed))))))

(defun gastownd--feed-lost (feed err)
  "FEED lost its connection with ERR.
Say so once per outage, and retry with a doubling delay."
  (gastownd--feed-disconnect feed)
  (if (equal (plist-get err :code) "overflow")
      (progn
        ;; Dropped for falling behind: the last cursor shown loses nothing.
        (gastownd--feed-say
         feed "fell behind the daemon; catching up from the last event shown")
        (gastownd--feed-retry feed 0))
    (unless (gastownd--feed-down feed)
      (setf (gastownd--feed-down feed) t)
      (if (gastownd--feed-ever-up feed)
          (progn
            (gastownd--feed-say
             feed (concat (gastownd--feed-reason err) "; reconnecting"))
            (gastownd--notify
             "the daemon went away; the feed will resume when it is back"))
        (gastownd--notify "%s; the feed will start when it is up"
                          (gastownd--feed-reason err))))
    (let ((delay (gastownd--feed-delay feed)))
      (setf (gastownd--feed-delay feed)
            (min (* 2 delay) gastownd-reconnect-max))
      (gastownd--feed-retry feed delay))))

(defun gastownd--feed-filters (feed message)
  "MESSAGE (a plist) with FEED's filters added."
  (append message
          (when (gastownd--feed-types feed)
            (list :types (vconcat (gastownd--feed-types feed))))
          (when (gastownd--feed-all-nodes feed)
            (list :all_nodes t))))

(defun gastownd--feed-expect-reply (feed)
  "Give up on FEED's connection if the pending reply does not come in time."
  (gastownd--feed-cancel-reply-timer feed)
  (let ((generation (gastownd--feed-generation feed)))
    (setf (gastownd--feed-reply-timer feed)
          (run-at-time
           gastownd-timeout nil
           (lambda ()
             (when (and (eq gastownd--the-feed feed)
                        (= generation (gastownd--feed-generation feed)))
               (gastownd--feed-lost
                feed (list :code "timeout"
                           :message "the daemon did not answer in time"))))))))

(defun gastownd--feed-send (feed message)
  "Send MESSAGE, with FEED's filters, and expect its reply in time."
  (gastownd--feed-expect-reply feed)
  (gastownd--send (gastownd--feed-process feed)
                  (gastownd--feed-filters feed message)))

(defun gastownd--feed-refused (feed id err)
  "The daemon answered request ID of FEED with ERR."
  (cond ((or (not (memql id '(0 1 2 3)))
             (equal (plist-get err :code) "shutting_down"))
         ;; A connection-level error, or a daemon on its way out.
         (gastownd--feed-lost feed err))
        (t
         ;; The daemon refused the feed itself (a bad type name, say):
         ;; retrying cannot help.
         (gastownd--feed-say feed (gastownd--describe "feed" err))
         (gastownd--notify "%s" (gastownd--describe "feed" err))
         (gastownd-feed-stop))))

(defun gastownd--feed-subscribed (feed result)
  "FEED's subscription was answered with RESULT."
  (gastownd--feed-cancel-reply-timer feed)
  ;; A resync on the head cursor the query just gave has nothing to re-read:
  ;; reading again would only ask the same question (and loop).
  (if (and (alist-get 'resync result) (not (gastownd--feed-fresh feed)))
      (progn
        (gastownd--feed-say
         feed (concat "resync: the daemon could not resume after the last "
                      "event shown (the log was replaced or pruned); "
                      "reading the latest events again"))
        (setf (gastownd--feed-cursor feed) nil)
        (gastownd--feed-connect feed))
    (when (and (gastownd--feed-down feed) (gastownd--feed-ever-up feed))
      (gastownd--feed-say feed "reconnected"))
    (setf (gastownd--feed-down feed) nil
          (gastownd--feed-ever-up feed) t
          (gastownd--feed-delay feed) gastownd-reconnect-min)))

(defun gastownd--feed-frame (feed frame)
  "Handle FRAME, received by FEED."
  (let ((push (alist-get 'push frame))
        (id (alist-get 'id frame))
        (result (alist-get 'result frame)))
    (cond
     ((equal push "event")
      (let ((event (alist-get 'event frame)))
        (when (consp event)
          (when (alist-get 'cursor frame)
            (setf (gastownd--feed-cursor feed) (alist-get 'cursor frame)
                  (gastownd--feed-fresh feed) nil))
          (gastownd--saw-type (alist-get 'type event))
          (gastownd--feed-append
           feed (list (gastownd--event-line event (alist-get 'node frame)
                                            (gastownd--feed-local-node feed)))))))
     ((member push '("overflow" "end"))
      (gastownd--feed-lost
       feed (list :code push :message (or (alist-get 'message frame) push))))
     ((not (alist-get 'ok frame))
      (gastownd--feed-refused feed id
                              (gastownd--error-plist (alist-get 'error frame))))
     ((eql id 3)
      ;; This daemon's node: its own events need no @node (a town without
      ;; federation has one node, and every line would say so).
      (setf (gastownd--feed-local-node feed)
            (alist-get 'node (alist-get 'federation result))
            (gastownd--feed-local-node-known feed) t)
      (gastownd--feed-read feed))
     ((eql id 1)
      (let ((events (alist-get 'events result)))
        (when (and (null events) (gastownd--feed-placeholder feed))
          (with-current-buffer (gastownd--feed-buffer feed)
            (let ((inhibit-read-only t))
              (erase-buffer)
              (insert gastownd-feed-empty "\n"))))
        (gastownd--feed-append
         feed (mapcar (lambda (event)
                        (gastownd--saw-type (alist-get 'type event))
                        (gastownd--event-line
                         event nil (gastownd--feed-local-node feed)))
                      (reverse events))))
      (setf (gastownd--feed-cursor feed) (alist-get 'cursor result)
            (gastownd--feed-fresh feed) t)
      (gastownd--feed-subscribe feed))
     ((eql id 2)
      (gastownd--feed-subscribed feed result)))))

(defun gastownd--feed-connect (feed)
  "Connect FEED: read the latest events, then subscribe.
With a cursor, resume the subscription from there instead."
  (gastownd--feed-disconnect feed)
  (let ((generation (gastownd--feed-generation feed)))
    (cl-flet ((current ()
                (and (eq gastownd--the-feed feed)
                     (= generation (gastownd--feed-generation feed)))))
      (gastownd--socket
       (gastownd--feed-root feed)
       (lambda (path err)
         (cond
          ((not (current)))
          (err (gastownd--feed-lost feed err))
          ((setf (gastownd--feed-process feed)
                 (gastownd--open
                  path
                  (lambda (frame)
                    (when (current) (gastownd--feed-frame feed frame)))
                  (lambda (close-error)
                    (when (current) (gastownd--feed-lost feed close-error)))))
           (gastownd--send (gastownd--feed-process feed) (gastownd--hello))
           (if (and (gastownd--feed-all-nodes feed)
                    (not (gastownd--feed-local-node-known feed)))
               ;; Events come tagged with their node: learn this daemon's first.
               (progn
                 (gastownd--feed-expect-reply feed)
                 (gastownd--send (gastownd--feed-process feed)
                                 (list :op "status" :id 3)))
             (gastownd--feed-read feed)))))))))

(defun gastownd--feed-read (feed)
  "Read FEED's latest events (then subscribe), or resume from its cursor."
  (if (gastownd--feed-cursor feed)
      (gastownd--feed-subscribe feed)
    (gastownd--feed-send
     feed (list :op "query" :id 1 :limit gastownd-feed-lines))))

(defun gastownd--feed-subscribe (feed)
  "Subscribe FEED from its cursor."
  (gastownd--feed-send
   feed (list :op "subscribe" :id 2 :cursor (gastownd--feed-cursor feed))))

(defun gastownd-feed-stop ()
  "Stop the feed: close its connection and timers.  Its buffer stays."
  (interactive)
  (let ((feed gastownd--the-feed))
    (when feed
      (setq gastownd--the-feed nil)
      (gastownd--feed-disconnect feed)
      (when (gastownd--feed-retry-timer feed)
        (cancel-timer (gastownd--feed-retry-timer feed))))))

(defun gastownd--feed-killed ()
  "The feed buffer is being killed: stop the feed."
  (when (and gastownd--the-feed
             (eq (gastownd--feed-buffer gastownd--the-feed) (current-buffer)))
    (gastownd-feed-stop)))

(defun gastownd--feed-start (buffer root types all-nodes)
  "Start a feed into BUFFER, emptied, from the town ROOT.
TYPES and ALL-NODES are its filters."
  (gastownd-feed-stop)
  (with-current-buffer buffer
    (let ((inhibit-read-only t))
      (erase-buffer)
      (insert gastownd-feed-waiting "\n"))
    (setq mode-name (gastownd--feed-mode-name types all-nodes))
    (force-mode-line-update)
    (setq gastownd--buffer-town (or root 'default)))
  (setq gastownd--the-feed
        (gastownd--feed-create :buffer buffer :root root :types types
                               :all-nodes all-nodes :placeholder t
                               :delay gastownd-reconnect-min))
  (gastownd--feed-connect gastownd--the-feed))

(defun gastownd--feed-revert (&rest _)
  "Read the latest events again."
  (let ((feed gastownd--the-feed))
    (gastownd--feed-start (current-buffer) (gastownd--town-root)
                          (and feed (gastownd--feed-types feed))
                          (and feed (gastownd--feed-all-nodes feed)))))

;;;###autoload
(defun gastownd-feed (&optional types all-nodes)
  "Show the town's live event feed in the buffer *gastownd-feed*.
TYPES limits it to these event types: a list of strings, each of which may
hold several separated by commas or spaces (\"sling,done\").  An unknown
type is refused with the list of the known ones.  ALL-NODES asks for the
whole town's feed, every machine's.  Interactively, a prefix argument asks
for both, with completion of the types."
  (interactive
   (when current-prefix-arg
     (list (gastownd--read-types)
           (y-or-n-p "Events of all nodes? "))))
  (let ((parsed (gastownd--parse-types types)))
    (if (stringp parsed)
        (progn (gastownd--notify "%s" parsed) nil)
      (let ((root (gastownd--town-root))
            (buffer (get-buffer-create gastownd-feed-buffer-name))
            (feed gastownd--the-feed)
            (all-nodes (and all-nodes t)))
        (with-current-buffer buffer
          (unless (derived-mode-p 'gastownd-feed-mode) (gastownd-feed-mode)))
        (unless (and feed (eq (gastownd--feed-buffer feed) buffer)
                     (equal (gastownd--feed-root feed) root)
                     (equal (gastownd--feed-types feed) parsed)
                     (eq (gastownd--feed-all-nodes feed) all-nodes))
          (gastownd--feed-start buffer root parsed all-nodes))
        (pop-to-buffer-same-window buffer)
        buffer))))

(provide 'gastownd-feed)
;;; gastownd-feed.el ends here
