;;; gastownd-mode-line.el --- gastownd: the daemon in the mode line  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; `gastownd-mode-line-mode': "gastownd: 2 open" or "gastownd: down".
;; Part of the gastownd package: load it with (require 'gastownd).

;;; Code:

(require 'gastownd-core)

;;;; Mode line

(defvar gastownd--mode-line-string ""
  "What `gastownd-mode-line-mode' shows.
\" gastownd: 2 open\", or \" gastownd: down\" when the daemon is not running.")

(defvar gastownd--mode-line-timer nil
  "The timer refreshing `gastownd--mode-line-string'.")

(defvar gastownd--mode-line-busy nil
  "Non-nil while a refresh of the mode line is on its way.")

(defconst gastownd--open-limit 1000
  "Open sessions counted at most by the mode line.")

(defun gastownd--mode-line-text (result err)
  "The mode line's text for RESULT, the answer to `sessions', or ERR."
  (let ((code (plist-get err :code)))
    (cond ((null err)
           (let ((open (length (alist-get 'sessions result))))
             (format " gastownd: %d%s open" open
                     (if (>= open gastownd--open-limit) "+" ""))))
          ((equal code "unavailable") " gastownd: down")
          ((equal code "timeout") " gastownd: no answer")
          (t " gastownd: ?"))))

(defun gastownd--mode-line-refresh ()
  "Count the open sessions of the selected window's town, asynchronously."
  (unless gastownd--mode-line-busy
    (setq gastownd--mode-line-busy t)
    (gastownd--request
     (with-current-buffer (window-buffer (selected-window))
       (gastownd--town-root))
     ;; :local: this daemon's own wisps, not other nodes' in a federated town.
     "sessions" (list :state "open" :limit gastownd--open-limit :local t)
     (lambda (result err)
       (setq gastownd--mode-line-busy nil)
       (let ((text (gastownd--mode-line-text result err)))
         (unless (equal text gastownd--mode-line-string)
           (setq gastownd--mode-line-string text)
           (force-mode-line-update t)))))))

;;;###autoload
(define-minor-mode gastownd-mode-line-mode
  "Show the daemon's state and its open sessions in the mode line.
The text is refreshed every `gastownd-mode-line-interval' seconds,
asynchronously."
  :global t
  :group 'gastownd
  (when gastownd--mode-line-timer
    (cancel-timer gastownd--mode-line-timer)
    (setq gastownd--mode-line-timer nil))
  (setq global-mode-string
        (delq 'gastownd--mode-line-string (or global-mode-string (list ""))))
  (when gastownd-mode-line-mode
    (setq global-mode-string
          (append global-mode-string (list 'gastownd--mode-line-string)))
    (setq gastownd--mode-line-busy nil)
    (setq gastownd--mode-line-timer
          (run-at-time 0 gastownd-mode-line-interval
                       #'gastownd--mode-line-refresh))))

(provide 'gastownd-mode-line)
;;; gastownd-mode-line.el ends here
